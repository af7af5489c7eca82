"""Run every benchmark scenario, interleaved, and write bench/results/latest.{json,md} + PNGs.

Normally started by bench/run.sh (which installs everything and starts the servers)::

    python bench/run_all.py --services .run/bench/services.json [--quick] [--runs N]
                            [--only fastpath,pingpong,scaling,drivers,watch]
"""
import argparse
import datetime
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common as C  # noqa: E402
import drivers  # noqa: E402
import fastpath  # noqa: E402
import pingpong  # noqa: E402
import scaling  # noqa: E402
import watch_cost  # noqa: E402

SCENARIOS = ("fastpath", "pingpong", "scaling", "drivers", "watch")
MODULES = {"fastpath": fastpath, "pingpong": pingpong, "scaling": scaling, "drivers": drivers,
           "watch": watch_cost}
RUNS = {"fastpath": 7, "pingpong": 9, "scaling": 5, "drivers": 7, "watch": 5}
QUICK_RUNS = 3


def log(msg):
    print(msg, flush=True)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--services", help="services.json of scripts/services.py (required to measure)")
    ap.add_argument("--quick", action="store_true",
                    help="smaller counts and %d rounds (a smoke test, not for the README)" % QUICK_RUNS)
    ap.add_argument("--runs", type=int, help="rounds per scenario (default: %s)" % RUNS)
    ap.add_argument("--only", default=",".join(SCENARIOS))
    ap.add_argument("--out", default=os.path.join(C.HERE, "results"))
    ap.add_argument("--setup-seconds", type=float, default=None,
                    help="time bench/run.sh spent installing and starting servers (for the report)")
    ap.add_argument("--rerender", metavar="JSON",
                    help="no measuring: summarize the raw results of an earlier latest.json again "
                         "and rewrite latest.md and the plots (after a change to the report code)")
    args = ap.parse_args(argv)
    if args.rerender:
        return rerender(args.rerender, args.out)
    if not args.services:
        ap.error("--services is required (bench/run.sh passes it)")
    only = [s for s in args.only.split(",") if s]
    for s in only:
        if s not in SCENARIOS:
            ap.error("unknown scenario %r (known: %s)" % (s, ", ".join(SCENARIOS)))
    os.makedirs(args.out, exist_ok=True)

    t_start = time.monotonic()
    started = datetime.datetime.now(datetime.timezone.utc)
    busy0 = C.cpu_times()
    meta = {
        "date": started.isoformat(timespec="seconds"),
        "machine": C.machine(),
        "versions": C.versions(),
        "loadavg_start": C.loadavg(),
        "quick": args.quick,
        "command": "bench/run.sh",
        "argv": [os.path.relpath(a, C.ROOT) if os.path.isabs(a) and a.startswith(C.ROOT) else a
                 for a in sys.argv[1:]],
    }
    try:
        with open(args.services) as f:
            svc = json.load(f)["services"]
        meta["servers"] = {k: v.get("version") for k, v in svc.items()}
    except (OSError, ValueError, KeyError):
        meta["servers"] = {}
    log("machine: %s, %s cores; load average %s" % (meta["machine"]["cpu_model"],
                                                     meta["machine"]["cores"], meta["loadavg_start"]))

    for tool in C.C_TOOLS:
        log("built %s" % os.path.relpath(C.build_tool(tool), C.ROOT))
    sections, timings, raw = {}, {}, {}
    srv_log = open(os.path.join(args.out, "delay-server.log.tmp"), "w")
    with C.CDelayServer(stderr=srv_log) as srv:
        cfg = {"quick": args.quick, "services": os.path.abspath(args.services),
               "delay_port": srv.tcp_port, "delay_pid": srv.pid}
        for name in only:
            mod = MODULES[name]
            runs = args.runs or (QUICK_RUNS if args.quick else RUNS[name])
            t0 = time.monotonic()
            if name == "watch":
                ok, why = watch_cost.available()
                if not ok:
                    log("[watch] %s" % why)
                    sections[name] = watch_cost.skipped(why)
                    timings[name] = 0.0
                    continue
                cfg["watch_function"] = why
                log("[watch] using %s" % why)
            cases = mod.cases(cfg)
            log("[%s] %d cases x %d rounds, interleaved" % (name, len(cases), runs))
            results = C.interleave(name, cases, runs, log=log)
            if hasattr(mod, "once_cases"):
                once = mod.once_cases(cfg)
                log("[%s] %d more cases, once" % (name, len(once)))
                results.update(C.interleave(name, once, 1, log=log))
            sec = mod.summarize(results, cfg)
            sec["runs"] = runs
            sections[name] = sec
            raw[name] = results
            timings[name] = round(time.monotonic() - t0, 1)
            log("[%s] done in %.0f s" % (name, timings[name]))
    srv_log.close()

    busy1 = C.cpu_times()
    meta["loadavg_end"] = C.loadavg()
    meta["machine_busy_pct"] = round(100.0 * (busy1[0] - busy0[0]) / max(1, busy1[1] - busy0[1]), 1)
    meta["bench_seconds"] = round(time.monotonic() - t_start, 1)
    meta["setup_seconds"] = args.setup_seconds
    meta["scenario_seconds"] = timings

    plots = make_plots(sections, args.out)
    meta["plots"] = [os.path.basename(p) for p in plots]
    meta["cfg"] = {"quick": args.quick, "watch_function": cfg.get("watch_function"),
                   "runs": {name: sections[name].get("runs") for name in sections}}
    write(args.out, {"meta": meta, "sections": sections, "raw": raw})
    try:
        os.unlink(os.path.join(args.out, "delay-server.log.tmp"))
    except OSError:
        pass
    log("")
    log(headline_md(sections))
    log("")
    log("wrote %s/latest.md, latest.json and %d plots in %.0f s" % (
        os.path.relpath(args.out), len(plots), meta["bench_seconds"]))
    errs = count_errors(raw)
    if errs:
        log("WARNING: %d measurement(s) failed; see latest.json" % errs)
    return 0


def write(out, doc):
    with open(os.path.join(out, "latest.json.tmp"), "w") as f:
        json.dump(doc, f, indent=1, sort_keys=False)
    os.replace(os.path.join(out, "latest.json.tmp"), os.path.join(out, "latest.json"))
    with open(os.path.join(out, "latest.md.tmp"), "w") as f:
        f.write(render(doc["meta"], doc["sections"]))
    os.replace(os.path.join(out, "latest.md.tmp"), os.path.join(out, "latest.md"))


def rerender(path, out):
    with open(path) as f:
        doc = json.load(f)
    meta, raw = doc["meta"], doc["raw"]
    cfg = dict(meta.get("cfg") or {"quick": meta.get("quick", False)})
    cfg.setdefault("services", None)
    cfg.setdefault("watch_function", (doc["sections"].get("watch") or {}).get("function"))
    sections = {}
    for name, sec in doc["sections"].items():
        if name in raw:
            sections[name] = MODULES[name].summarize(raw[name], cfg)
            sections[name]["runs"] = sec.get("runs")
        else:
            sections[name] = sec    # e.g. a skipped scenario
    meta["plots"] = [os.path.basename(p) for p in make_plots(sections, out)]
    meta["rerendered"] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    doc["sections"] = sections
    write(out, doc)
    log(headline_md(sections))
    return 0


def count_errors(raw):
    return sum(1 for res in raw.values() for rs in res.values() for r in rs if "error" in r)


# --- the report --------------------------------------------------------------------------------

def headline_rows(sections):
    """[(figure, greenhook, alternative, ratio, target, verdict)] for the summary table."""
    rows = []
    fp = sections.get("fastpath")
    if fp:
        for loop, label, alt in (
                ("recv_send", "fast path send+recv, CPU ns/call", "raw "),
                ("poll0_like", "fast path poll (ready, hooked poll(…, 1000)), CPU ns/call",
                 "raw poll(…, 0) "),
                ("poll_ready", "fast path poll (ready), CPU ns/call", "raw poll(…, 1000) "),
                ("read_pipe", "pass-through read/write on a pipe, CPU ns/call", "raw ")):
            f = fp["figures"].get(loop)
            if not f:
                continue
            r = f["ratio_greenhook"]
            counted = loop in getattr(fastpath, "TARGET_LOOPS", ())
            target = "≤ 1.10x raw" if counted else "(information: unlike for like)"
            ok = (r is not None and r <= fastpath.TARGET) if counted else None
            rows.append((label, C.mmm(f["greenhook"]), alt + C.mmm(f["raw"]), C.fmt_ratio(r),
                         target, C.verdict(ok)))
    pp = sections.get("pingpong")
    if pp:
        f = pp["figures"]
        rs, rf = pp["ratio_vs_gevent_socket"], pp.get("ratio_vs_floor", {})
        t13 = pp.get("targets13", {})
        for m, hub, tgt, key in (("greenhook-gevent", "gevent hub", pingpong.TARGET_GEVENT_VS_SOCKETS,
                                  "gevent_vs_sockets"),
                                 ("greenhook-builtin", "builtin hub",
                                  pingpong.TARGET_BUILTIN_VS_SOCKETS, "builtin_vs_sockets")):
            rows.append(("wait/wake round trip, %s, µs (wall)" % hub, C.mmm(f[m]),
                         "gevent sockets " + C.mmm(f["gevent-socket"]), C.fmt_ratio(rs[m]),
                         "≤ %.2fx gevent sockets" % tgt, C.verdict(t13.get(key))))
        if "c-floor" in f:
            for m, hub, key in (("greenhook-gevent", "gevent hub", "gevent_vs_floor"),
                                ("greenhook-builtin", "builtin hub", "builtin_vs_floor"),
                                ("gevent-socket", "gevent's sockets", None)):
                rows.append(("wait/wake round trip, %s, vs the C floor" % hub, C.mmm(f[m]),
                             "C epoll ping-pong " + C.mmm(f["c-floor"]), C.fmt_ratio(rf.get(m)),
                             "≤ %.1fx the C floor" % pingpong.TARGET_VS_FLOOR if key else
                             "(information)", C.verdict(t13.get(key)) if key else "n/a"))
        c = pp["cpu"]
        rows.append(("wait/wake round trip, gevent hub, CPU µs", C.mmm(c["greenhook-gevent"]),
                     "gevent sockets " + C.mmm(c["gevent-socket"]),
                     C.fmt_ratio(pp["cpu_ratio_vs_gevent_socket"]["greenhook-gevent"]),
                     "(information)", "n/a"))
        sysc = pp.get("syscalls") or {}
        for m, hub in (("greenhook-gevent", "gevent hub"), ("greenhook-builtin", "builtin hub"),
                       ("gevent-socket", "gevent's sockets")):
            v, fl = sysc.get(m), sysc.get("c-floor")
            if v and fl:
                rows.append(("syscalls per round trip, %s" % hub, C.fmt(v["total"]),
                             "C floor " + C.fmt(fl["total"]), "%+.1f" % v["beyond_floor"],
                             "+0 beyond the C floor" if m != "gevent-socket" else "(information)",
                             C.verdict(v["beyond_floor"] <= 0) if m != "gevent-socket" else "n/a"))
    sc = sections.get("scaling")
    if sc:
        top = str(max(sc["ns"]))
        figs, t = sc["figures"], sc["target"]

        def ph(mode, name):
            f = figs.get(mode, {}).get(top, {})
            return f.get(name) or {"wall": {}, "x_ideal": {}}

        def x(f):
            return C.fmt_ratio(f["x_ideal"].get("median"))

        ce, fl = ph("ceiling", "requests"), ph("c-floor", "requests")
        for mode, hub, key in (("greenhook-gevent", "gevent hub", "met"),
                               ("greenhook-builtin", "builtin hub", "builtin_met")):
            g = ph(mode, "requests")
            rows.append(("%s x 50 ms requests on open connections, %s, wall s" % (top, hub),
                         C.mmm(g["wall"]), "pure gevent-socket client " + C.mmm(ce["wall"]),
                         "%s ideal; %s the gevent-socket client" % (
                             x(g), C.fmt_ratio(C.ratio(g["wall"].get("median"),
                                                       ce["wall"].get("median")))),
                         "≤ %.1fx ideal" % scaling.TARGET_X, C.verdict(t.get(key))))
        if fl["wall"].get("median") is not None:
            rows.append(("%s x 50 ms requests on open connections, C floor (one thread, "
                         "epoll), wall s" % top, "—", "C floor " + C.mmm(fl["wall"]),
                         "%s ideal" % x(fl), "(information: what the machine allows)", "n/a"))
        for mode, hub, key in (("greenhook-gevent", "gevent hub", "gated_met"),
                               ("greenhook-builtin", "builtin hub", "gated_builtin_met")):
            g, c = ph(mode, "requests_gated"), ph("ceiling", "requests_gated")
            if g["wall"].get("median") is not None:
                rows.append(("same, greenlets already running, %s, wall s" % hub,
                             C.mmm(g["wall"]), "pure gevent-socket client " + C.mmm(c["wall"]),
                             "%s ideal" % x(g), "(information) ≤ %.1fx ideal" % scaling.TARGET_X,
                             C.verdict(t.get(key))))
        g, c = ph("greenhook-gevent", "per_request"), ph("ceiling", "per_request")
        if g["wall"].get("median") is not None:
            rows.append(("%s x 50 ms requests, one connection each (connect + close timed), "
                         "gevent hub, wall s" % top, C.mmm(g["wall"]),
                         "pure gevent-socket client " + C.mmm(c["wall"]), "%s ideal" % x(g),
                         "(information)", "n/a"))
        spr = ph("greenhook-gevent", "requests").get("server_cpu_us_per_req")
        spc = ph("greenhook-gevent", "per_request").get("server_cpu_us_per_req")
        if spr and spr.get("median") is not None:
            rows.append(("C delay server's own CPU per request at N=%s, µs: open connection "
                         "/ one connection per request" % top, "—",
                         "%s / %s" % (C.mmm(spr), C.mmm(spc)), "—", "(information)", "n/a"))
    dr = sections.get("drivers")
    if dr:
        m = dr["figures"]["mysql"]["select1"]
        gh = m["greenhook"]["qps"]
        for alt, label, target, key in (
                ("pymysql", "PyMySQL/gevent", "≥ 2x", "2x PyMySQL"),
                ("greenify", "greenify", "≥ 1x", "greenify"),
                ("threadpool", "threadpool", "≥ 1x", "threadpool")):
            a = m[alt]["qps"]
            ok = [v for k, v in dr["targets"].items() if key in k]
            rows.append(("mysqlclient SELECT 1, 50 clients, q/s", C.mmm(gh),
                         "%s %s" % (label, C.mmm(a)), C.fmt_ratio(C.ratio(gh["median"], a["median"])),
                         target + " " + label, C.verdict(ok[0] if ok else None)))
        gc, pc = m["greenhook"]["cpu_us_per_q"], m["pymysql"]["cpu_us_per_q"]
        rows.append(("mysqlclient SELECT 1, client CPU µs per query", C.mmm(gc),
                     "PyMySQL/gevent " + C.mmm(pc), C.fmt_ratio(C.ratio(gc["median"], pc["median"])),
                     "(information)", "n/a"))
        pg = dr["figures"]["postgres"]["select1"]
        for fig, what, target, key in (("qps", "q/s", "≥ 1x", ">= 1.00x psycogreen"),
                                       ("p99_ms", "p99 ms", "≤ 1.2x", "p99 <= 1.2x")):
            g, a = pg["greenhook"][fig], pg["psycogreen"][fig]
            ok = [v for k, v in dr["targets"].items() if key in k]
            rows.append(("psycopg2 SELECT 1, 50 clients, %s" % what, C.mmm(g),
                         "psycogreen " + C.mmm(a), C.fmt_ratio(C.ratio(g["median"], a["median"])),
                         target + " psycogreen", C.verdict(ok[0] if ok else None)))
    wc = sections.get("watch")
    if wc:
        if wc.get("skipped"):
            rows.append(("detector cost (watch on/off)", "—", "—", "—", "(information)",
                         "placeholder: not run"))
        else:
            f = wc["figures"]["select1"]
            rows.append(("detector cost, SELECT 1 q/s with watch on", C.mmm(f["on"]["qps"]),
                         "off " + C.mmm(f["off"]["qps"]), C.fmt_ratio(f["cost"]) + " (off / on)",
                         "(information)", "n/a"))
    return rows


def headline_md(sections):
    return C.md_table(["figure", "greenhook: median (min–max)", "alternative: median (min–max)",
                       "ratio", "target", "verdict"], headline_rows(sections))


def render(meta, sections):
    m = meta["machine"]
    v = meta["versions"]
    total = meta["bench_seconds"] + (meta["setup_seconds"] or 0)
    md = ["# greenhook benchmarks", ""]
    md.append("Generated by `bench/run.sh` on %s%s. Every figure is **median (min–max)** over "
              "independent runs, each in a fresh process; the cases of a scenario run round-robin "
              "(A B C, B C A, ...), never all of A then all of B." % (
                  meta["date"], " (tables re-rendered from the same measurements on %s)"
                  % meta["rerendered"] if meta.get("rerendered") else ""))
    md.append("")
    md.append(C.md_table(["", ""], [
        ["CPU", "%s, %s cores (`/proc/cpuinfo`, `os.cpu_count()`)" % (m["cpu_model"], m["cores"])],
        ["kernel", m["kernel"]],
        ["load average at start / end", "%s / %s" % (meta["loadavg_start"], meta["loadavg_end"])],
        ["whole-machine CPU busy during the run",
         "%s%% (the benchmark, its servers and anything else running: this machine is shared)"
         % meta["machine_busy_pct"]],
        ["runtime", "%.0f s benchmarks%s" % (
            meta["bench_seconds"],
            "" if meta["setup_seconds"] is None else
            " + %.0f s setup = %.0f s (%.1f min)" % (meta["setup_seconds"], total, total / 60.0))],
        ["per scenario", ", ".join("%s %.0f s" % kv for kv in meta["scenario_seconds"].items())],
        ["versions", ", ".join("%s %s" % (k, v[k]) for k in v if v[k])],
        ["servers", ", ".join("%s %s" % kv for kv in meta.get("servers", {}).items())],
    ]))
    if meta["quick"]:
        md += ["", "**`--quick` run: reduced counts and rounds — a smoke test, not for comparison.**"]
    md += ["", "## Headline", "", headline_md(sections), ""]
    for name, heading in (("fastpath", "1. "), ("pingpong", "2. "), ("scaling", "3. "),
                          ("drivers", "4. "), ("watch", "5. ")):
        sec = sections.get(name)
        if not sec:
            continue
        md.append("## %s%s" % (heading, sec["title"]))
        md.append("")
        if sec.get("runs"):
            md.append("%d runs per case." % sec["runs"])
            md.append("")
        md.append(MODULES[name].report(sec))
        md.append("")
        pics = {"fastpath": ["fastpath.png"], "pingpong": ["pingpong.png"],
                "scaling": ["scaling_wall.png", "scaling_rss.png"], "drivers": ["drivers.png"]}
        for p in pics.get(name, []):
            if p in meta.get("plots", []):
                md.append("![%s](%s)" % (p, p))
                md.append("")
    md.append("Raw per-run values, errors and versions: `latest.json`.")
    md.append("")
    return "\n".join(md)


def make_plots(sections, outdir):
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        log("no plots: %s" % exc)
        return []
    paths = []
    for name in ("fastpath", "pingpong", "scaling", "drivers"):
        sec = sections.get(name)
        if not sec:
            continue
        try:
            paths += MODULES[name].plot(sec, plt, outdir)
        except Exception as exc:  # a plot must not lose the numbers
            log("plot %s failed: %r" % (name, exc))
    return paths


if __name__ == "__main__":
    sys.exit(main())
