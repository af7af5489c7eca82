/* Per-architecture relocation types for the GOT patcher.  Only 64-bit RELA targets. */
#ifndef GREENHOOK_ELF_ARCH_H
#define GREENHOOK_ELF_ARCH_H
#include <elf.h>
#include <link.h>

#if defined(__x86_64__)
#  define GH_ARCH_SUPPORTED 1
#  define GH_ARCH_NAME "x86_64"
#  define GH_R_JUMP_SLOT R_X86_64_JUMP_SLOT
#  define GH_R_GLOB_DAT  R_X86_64_GLOB_DAT
#  define GH_R_ABS64     R_X86_64_64
#elif defined(__aarch64__)
#  define GH_ARCH_SUPPORTED 1
#  define GH_ARCH_NAME "aarch64"
#  define GH_R_JUMP_SLOT R_AARCH64_JUMP_SLOT
#  define GH_R_GLOB_DAT  R_AARCH64_GLOB_DAT
#  define GH_R_ABS64     R_AARCH64_ABS64
#else
#  define GH_ARCH_SUPPORTED 0
#  define GH_ARCH_NAME "unsupported"
#  define GH_R_JUMP_SLOT (-1)
#  define GH_R_GLOB_DAT  (-1)
#  define GH_R_ABS64     (-1)
#endif

#if GH_ARCH_SUPPORTED
typedef Elf64_Dyn  gh_dyn_t;
typedef Elf64_Rela gh_rela_t;
typedef Elf64_Sym  gh_sym_t;
#  define GH_R_SYM(i)  ELF64_R_SYM(i)
#  define GH_R_TYPE(i) ELF64_R_TYPE(i)
#else
/* Keep the module compilable elsewhere; nothing is ever read through these. */
typedef ElfW(Dyn) gh_dyn_t;
typedef struct { unsigned long r_offset, r_info; long r_addend; } gh_rela_t;
typedef ElfW(Sym) gh_sym_t;
#  define GH_R_SYM(i)  0
#  define GH_R_TYPE(i) 0
#endif

#ifndef DT_RELRSZ
#  define DT_RELRSZ 35
#endif

static inline void gh_store_slot(void *slot, unsigned long value) {
    __atomic_store_n((unsigned long *)slot, value, __ATOMIC_SEQ_CST);
}
static inline unsigned long gh_load_slot(const void *slot) {
    return __atomic_load_n((const unsigned long *)slot, __ATOMIC_SEQ_CST);
}
#endif
