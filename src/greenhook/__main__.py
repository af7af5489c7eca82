"""``python -m greenhook`` / ``greenhook``: demo, verify, audit."""

import sys

USAGE = """usage: greenhook COMMAND [ARGS]

commands:
  demo     greened vs ungreened sample C clients, side by side, on the built-in hub
  verify   prove on this machine that greened calls yield (every call style x link variant)
  audit    which blocking calls a library imports and which greenhook covers

'greenhook COMMAND --help' for a command's options."""


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE)
        return 0
    cmd, rest = argv[0], argv[1:]
    if cmd == "demo":
        from greenhook.demo import main as run
    elif cmd == "verify":
        from greenhook.verify import main as run
    elif cmd == "audit":
        from greenhook.audit import main as run
    else:
        print(f"greenhook: unknown command {cmd!r}\n\n{USAGE}", file=sys.stderr)
        return 2
    return run(rest)


if __name__ == "__main__":
    sys.exit(main())
