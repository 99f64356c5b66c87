"""`mccscan` command line: a thin layer over the library (no logic of its own).

Each command's options are built only when that command runs, importing the modules
whose defaults it shows, so `mccscan --help` starts without loading PyTorch.
"""

from __future__ import annotations

import argparse
import shlex
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from mccscan import __version__
from mccscan.errors import InputError, MccscanError

class HELP(argparse.ArgumentDefaultsHelpFormatter):
    """Shows each option's default, unless its help says it already or there is none to show."""

    def _get_help_string(self, action):
        if action.default is None or "default" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


WEIGHTS_HELP = "weights .pt with its model card beside it (default: the shipped weights of --detector)"
DETECTOR_HELP = "mc: finds MCs, then clusters of >= 3 within 1 cm2; paper: the paper's net on 1 cm2 tiles"
THRESHOLD_HELP = "report clusters (tiles) scoring at least this (default: the operating point stored with the weights)"


def _cmd_info(args) -> int:
    from mccscan.models import MCCNet, flops_per_patch, parameter_count
    from mccscan.paper import BASELINES, PAPER_MODEL, PAPER_TABLE3, TABLE1, build_model
    from mccscan.perf import peak_flops

    print(f"{'architecture':<18}{'layers':>7}{'kernel':>8}{'filters':>12}{'pools':>6}"
          f"{'parameters':>12}{'paper':>8}{'MFLOP/patch':>13}{'paper acc':>10}")
    for name, row in TABLE1.items():
        cfg, model = row.config, MCCNet(row.config)
        mark = " *" if name == PAPER_MODEL else ""
        print(f"{name + mark:<18}{len(cfg.conv_channels):>7}{cfg.kernel_size_px:>6}×{cfg.kernel_size_px:<1}"
              f"{','.join(map(str, cfg.conv_channels)):>12}{cfg.max_pool_layers:>6}{model.num_parameters():>12,}"
              f"{row.paper_parameters:>8,}{model.flops_per_patch() / 1e6:>13.1f}{row.paper_accuracy:>10.1%}")
    print("* the paper's proposed model: conv 9×9×6 → conv 9×9×16 → global max → dropout 0.2 → dense → sigmoid")
    print(f"\n{'baseline (Table 3)':<24}{'parameters':>12}{'paper':>13}{'MFLOP/patch':>13}{'paper acc':>10}")
    for name in BASELINES:
        baseline = build_model(name)
        paper_acc, paper_params = PAPER_TABLE3.get(name, (None, None))
        print(f"{name:<24}{parameter_count(baseline, with_bn_statistics=True):>12,}"
              f"{format(paper_params, ',') if paper_params else '–':>13}{flops_per_patch(baseline) / 1e6:>13.1f}"
              f"{format(paper_acc, '.1%') if paper_acc else '–':>10}")
    print("(parameters as Keras counts them: BatchNorm's running statistics included)")
    model = MCCNet(TABLE1[PAPER_MODEL].config)
    print("measuring this machine's float32 peak (a few seconds)…", file=sys.stderr, flush=True)
    peak = peak_flops()
    print(f"measured float32 peak of this machine: {peak / 1e9:.0f} GFLOP/s → at most "
          f"{peak / model.flops_per_patch():,.0f} patches/s for the proposed model")
    return 0


def _cmd_phantom(args) -> int:
    from mccscan.datasets.phantom import make_phantom

    for seed in range(args.seed, args.seed + args.count):
        ph = make_phantom(seed, size=args.size, view=args.view, laterality=args.laterality, n_clusters=args.clusters)
        paths = ph.write(args.out, formats=args.format)
        print(f"seed {seed}: {ph.laterality}{ph.view} {ph.image.shape[1]}×{ph.image.shape[0]}, "
              f"{len(ph.clusters)} cluster(s), {len(ph.mcs)} MCs → {', '.join(str(p) for p in paths.values())}")
    return 0


def _cmd_train(args) -> int:
    from mccscan.train import TrainConfig, train_on_dataset

    config = TrainConfig(arch=args.arch, epochs=args.epochs, batch_size=args.batch_size, learning_rate=args.lr,
                         augment=not args.no_augment, seed=args.seed, bf16=args.bf16, patience=args.patience)
    command = "mccscan " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    card = train_on_dataset(args.data, args.out, config, phantom_images=args.phantom_images, command=command,
                            progress=sys.stderr.isatty())
    t = card["test"]
    print(f"best epoch {card['epoch']}: test accuracy {t['accuracy']:.4f}, sensitivity {t['sensitivity']:.4f}, "
          f"specificity {t['specificity']:.4f} → {Path(args.out) / 'best.pt'}")
    return 0


def _cmd_train_detector(args) -> int:
    from mccscan.train_detector import DetectorTrainConfig, choose_operating_point, train_detector

    config = DetectorTrainConfig(train_phantoms=args.train_phantoms, val_phantoms=args.val_phantoms,
                                 negatives_per_image=args.negatives, epochs=args.epochs, seed=args.seed,
                                 acquisition=not args.no_acquisition, tissue=tuple(args.tissue),
                                 tissue_spacing_mm=args.tissue_spacing, tissue_draws=args.tissue_draws,
                                 candidate_snr=args.candidate_snr, wide_sigma_px=args.wide_sigma,
                                 channels=tuple(args.channels), cosine_lr=args.cosine_lr,
                                 lookalike_repeats=args.lookalike_repeats, context_pool=args.context_pool,
                                 position_aware=args.position_aware, tissue_isolated=args.tissue_isolated,
                                 isolated_repeats=args.isolated_repeats,
                                 mc_floor=DetectorTrainConfig.mc_floor if args.mc_floor is None else args.mc_floor,
                                 operating_point_spacings_mm=tuple(args.operating_point_spacings
                                                                   or DetectorTrainConfig.operating_point_spacings_mm))
    command = "mccscan " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    if args.recalibrate:
        card = choose_operating_point(Path(args.out) / "mc.pt", args.val_phantoms, args.operating_point_spacings,
                                      mc_floor=args.mc_floor, progress=sys.stderr.isatty(), command=command)
    else:
        card = train_detector(args.out, config, progress=sys.stderr.isatty(), command=command)
    print(f"best epoch {card['epoch']} → {Path(args.out) / 'mc.pt'}; cluster operating point "
          f"{card['operating_point']['cluster_threshold']:.3f}")
    return 0


def _cmd_tune(args) -> int:
    from mccscan.tune import TuneConfig, tune

    config = TuneConfig(trials=args.trials, max_epochs=args.max_epochs, seed=args.seed, storage=args.storage,
                        study_name=args.study_name, bf16=args.bf16, max_train_patches=args.max_train_patches)
    summary = tune(args.data, args.out, config, progress=sys.stderr.isatty())
    print(summary["table"])
    best = summary["best"]
    print(f"best (trial {best['trial']}, validation accuracy {best['validation_accuracy']:.4f}): "
          + ", ".join(f"{k} {best[k]}" for k in best["paper_best"])
          + "\npaper's best: " + ", ".join(f"{k} {v}" for k, v in best["paper_best"].items())
          + f"\n→ {args.out}/best.json, {args.out}/table.md; trials so far: {best['trials']}")
    return 0


def _cmd_explain(args) -> int:
    from mccscan.explain import explain, explain_patches
    from mccscan.weights import load_model

    loaded = load_model(args.weights)
    patches, labels, source = explain_patches(args.data, args.split)
    result = explain(loaded.model, patches, labels, args.out)
    fig4, fig5 = result["fig4"], result["fig5"]
    print(f"model {loaded.name} on {len(labels)} patches of {source}")
    print(f"Fig. 3 (patch {result['patch_index']}, P(MCC) {result['patch_probability']:.3f}) → {result['fig3']}")
    print(f"Fig. 4: CL1 filter {fig4['filter']}; share of energy in the MC band per filter: "
          + ", ".join(f"{f:.0%}" for f in fig4["band_energy_fraction"])
          + f"; band-pass: {sum(fig4['band_pass'])}/{len(fig4['band_pass'])} → {fig4['png']}")
    print(f"Fig. 5: {fig5['present']} present vs {fig5['absent']} absent; mean F2 higher when present in "
          f"{fig5['elements_higher_when_present']}/{fig5['elements']} elements → {fig5['png']}")
    return 0


def _cmd_reproduce(args) -> int:
    from mccscan.reproduce import ReproduceConfig, reproduce

    overrides = {k: getattr(args, k) for k in ("epochs", "baseline_epochs", "table1_epochs", "tune_trials",
                                               "tune_max_epochs", "max_train_patches") if getattr(args, k) is not None}
    overrides.update(bf16=args.bf16, seed=args.seed, pixel_spacing_mm=args.pixel_spacing)
    config = ReproduceConfig.quick_mode(**overrides) if args.quick else ReproduceConfig(**overrides)
    command = "mccscan " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    results = reproduce(args.data, args.out, config, phantom_images=args.phantom_images,
                        progress=sys.stderr.isatty(), command=command)
    acc = results["patch_level"]["metrics"]["accuracy"]
    froc = results["froc"].get("sensitivity_at_fp", {})
    print(f"test accuracy {acc['value']:.4f} (95% CI {acc['ci95'][0]:.4f}–{acc['ci95'][1]:.4f}); "
          f"FROC sensitivity at 1 FP/image: {froc.get('1.0', float('nan')):.3f}; "
          f"{results['elapsed_min']:.1f} min → {Path(args.out) / 'report.md'}")
    return 0


def _cmd_evaluate(args) -> int:
    from mccscan.evaluate import EVAL_PHANTOM_SEEDS, evaluate_on_dataset, evaluate_on_phantoms
    from mccscan.io import SCAN_PIXEL_SPACING_MM
    from mccscan.metrics import by_contrast_text, by_kind_text
    from mccscan.weights import DEFAULT_DETECTOR, load_detector

    loaded = load_detector(args.detector or ("paper" if args.data else DEFAULT_DETECTOR), args.weights)
    if args.data is None:  # whole unseen phantoms
        spacing = SCAN_PIXEL_SPACING_MM if args.pixel_spacing is None else args.pixel_spacing
        result = {"cluster_froc": evaluate_on_phantoms(loaded, args.phantoms, n_bootstrap=args.bootstrap,
                                                       pixel_spacing_mm=spacing, out_dir=args.out,
                                                       progress=sys.stderr.isatty())}
        print(f"{args.phantoms} unseen phantoms (seeds {EVAL_PHANTOM_SEEDS.start}–) delivered at {spacing} mm, "
              f"model {loaded.name}:")
    else:
        result = evaluate_on_dataset(loaded, args.data, args.out, split=args.split, n_bootstrap=args.bootstrap,
                                     pixel_spacing_mm=args.pixel_spacing)
        pl = result["patch_level"]
        print(f"{args.split} split of {args.data}, model {loaded.name}:")
        if "skipped" in pl:
            print(f"  patch level skipped: {pl['skipped']}")
        else:
            print(f"  patch level, {pl['n']} patches ({pl['groups']} windows):")
            for k, m in pl["metrics"].items():
                print(f"    {k:<12}{m['value']:.4f}  95% CI {m['ci95'][0]:.4f}–{m['ci95'][1]:.4f}")
            c = pl["confusion"]
            print(f"    confusion: TP {c['tp']}  FN {c['fn']}  FP {c['fp']}  TN {c['tn']}; "
                  f"ECE {pl['calibration']['ece']:.3f}")
        fr = result["froc"]
        if "skipped" not in fr:
            s = fr["sensitivity_at_fp"]
            print(f"  FROC of the dense map on {fr['images']} mammograms, {fr['clusters']} clusters: sensitivity "
                  f"{s['0.5']:.3f} at 0.5 FP/image, {s['1.0']:.3f} at 1, {s['2.0']:.3f} at 2")
    cf = result["cluster_froc"]
    if "skipped" in cf:
        print(f"  cluster FROC skipped: {cf['skipped']}")
    else:
        at = [_number(v["value"]) + ("" if None in v["ci95"] else f" (95% CI {v['ci95'][0]:.3f}–{v['ci95'][1]:.3f})")
              + f" at {f}" for f, v in cf["sensitivity_at_fp"].items()]
        print(f"  cluster FROC on {cf['images']} whole mammograms, {cf['clusters']} clusters (centre within 5 mm of "
              f"the outline): {', '.join(at)} FP/image")
        op = cf.get("operating_point", {})
        if "by_contrast" in op:
            print(f"  at the operating point (score ≥ {op['threshold']:.3f}): {op['found']}/{op['clusters']} found "
                  f"({by_contrast_text(op['by_contrast'])}), {op['fp_per_image']:.2f} false per image")
        for key, what in (("isolated_sites", "isolated 1–2-MC sites"), ("lookalike_sites", "benign lookalikes")):
            if key in cf:
                by_kind = by_kind_text(cf[key])
                print(f"  {what} that produce a cluster: {cf[key]['with_a_cluster']}/{cf[key]['sites']}"
                      + (f" ({by_kind})" if by_kind else ""))
    print(f"→ {args.out}/evaluation.json")
    return 0


def _cmd_scan(args) -> int:
    from tqdm import tqdm

    from mccscan.dicom_results import write_dicom_results
    from mccscan.render import output_stems, save_scan
    from mccscan.scan import scan_file
    from mccscan.weights import load_detector

    remote = [f"--{k}" for k in ("study", "series", "instance", "send") if getattr(args, k)]
    if args.dicomweb and args.images:
        raise InputError("give image files or --dicomweb, not both")
    if remote and not args.dicomweb:
        raise InputError(f"{', '.join(remote)}: only with --dicomweb URL")
    if not args.images and not args.dicomweb:
        raise InputError("give mammogram files to scan, or --dicomweb URL with --study/--series/--instance")
    loaded = load_detector(args.detector, args.weights)
    if args.dicomweb:
        return _scan_dicomweb(args, loaded)
    failures = 0
    for path, stem in zip(args.images, output_stems(args.images)):
        try:
            with tqdm(desc=Path(path).name, unit="row", leave=False, disable=not sys.stderr.isatty()) as bar:
                result, image = scan_file(path, loaded, engine=args.engine, on_row=lambda tiles: bar.update(1),
                                          **_scan_options(args))
            for warning in result.warnings:
                print(f"warning: {warning}", file=sys.stderr)
            written = save_scan(result, image, args.out, stem=stem, style=args.style,
                                normal_color=args.normal_color, mcc_color=args.mcc_color)
            if args.dicom:
                try:
                    written.update(write_dicom_results(result, path, args.out, stem))
                except InputError as exc:  # a PNG, say: its other outputs stand
                    print(f"warning: no DICOM SR or map: {exc}", file=sys.stderr)
        except MccscanError as exc:
            print(f"error: {exc}", file=sys.stderr)
            failures += 1
            continue
        except Exception as exc:  # noqa: BLE001 — one file's surprise must not lose the rest of the batch
            print(f"error: {path}: scan failed ({type(exc).__name__}: {exc})", file=sys.stderr)
            failures += 1
            continue
        print(f"{path}: {len(result.findings)} cluster(s) in {result.elapsed_s:.2f} s → {written['json']}, "
              + ", ".join(p.name for key, p in written.items() if key not in ("json", "csv")))
        print_findings(result)
    if failures:
        print(f"{failures} of {len(args.images)} files failed", file=sys.stderr)
    return 1 if failures else 0


def _scan_options(args) -> dict:
    return dict(pixel_spacing_mm=args.pixel_spacing, max_pixels=args.max_pixels, threshold=args.threshold,
                min_breast_fraction=args.min_breast_fraction)


def _scan_dicomweb(args, loaded) -> int:
    """scan --dicomweb: the MG images of a study/series/instance in a PACS, results beside
    (and with --send, into the PACS)."""
    from mccscan.dicomweb import connect, find_images, scan_remote_image

    client = connect(args.dicomweb)
    refs = find_images(client, study=args.study, series=args.series, instance=args.instance)
    if not refs:
        print(f"no MG image found at {args.dicomweb} for the UIDs given", file=sys.stderr)
        return 1
    failures = 0
    for ref in refs:
        try:
            done = scan_remote_image(client, ref, loaded, args.out, send_back=args.send, **_scan_options(args))
        except Exception as exc:  # noqa: BLE001 — one image's failure must not lose the rest of the study
            print(f"error: {ref.sop}: {exc if isinstance(exc, MccscanError) else f'{type(exc).__name__}: {exc}'}",
                  file=sys.stderr)
            failures += 1
            continue
        sent = f"; stored SR {done.sent[0]} and map {done.sent[1]} in study {ref.study}" if done.sent else ""
        print(f"{ref.sop}: {len(done.result.findings)} cluster(s) → {done.written['json']}, "
              f"{done.written['sr'].name}, {done.written['pmap'].name}{sent}")
        print_findings(done.result)
    if failures:
        print(f"{failures} of {len(refs)} images failed", file=sys.stderr)
    return 1 if failures else 0


def _cmd_watch(args) -> int:
    from mccscan.dicomweb import watch
    from mccscan.weights import load_detector

    loaded = load_detector(args.detector, args.weights)
    try:
        counts = watch(args.dicomweb, loaded, args.out, send_back=not args.no_send, changes_url=args.changes_url,
                       poll_s=args.poll, batch_size=args.batch_size, once=args.once, from_start=args.from_start,
                       log=lambda line: print(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {line}", flush=True),
                       **_scan_options(args))
    except KeyboardInterrupt:
        print("stopped; a restart goes on from the last image handled", file=sys.stderr)
        return 0
    print(f"{counts.scanned} scanned, {counts.failed} failed, {counts.skipped} already handled")
    return 0


def _cmd_batch(args) -> int:
    from mccscan.batch import read_study_list, run_batch
    from mccscan.database import create_engine, redacted
    from mccscan.results_table import export_csv

    if args.db:
        db_url = args.db
    else:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        db_url = str(Path(args.out) / "results.sqlite3")
    studies = read_study_list(args.studies) if args.studies else None
    summary = run_batch(args.source, db_url, studies=studies, workers=args.workers, ray_address=args.ray_address,
                        detector=args.detector, weights=args.weights, progress=sys.stderr.isatty(),
                        **_scan_options(args))
    for failure in summary.failures:
        print(f"failed: {failure}", file=sys.stderr)
    peaks = ", ".join(f"{w} {mb:.0f} MB" for w, mb in sorted(summary.peak_rss_mb.items())) or "–"
    duplicates = f", {summary.duplicates} the same content as another path" if summary.duplicates else ""
    print(f"{summary.images} images: {summary.done} scanned, {summary.failed} failed, {summary.skipped} already "
          f"done with these weights and options{duplicates}; {summary.images_per_s:.2f} images/s over "
          f"{summary.elapsed_s:.1f} s; peak RSS per worker: {peaks}; results in {redacted(db_url)}")
    if args.export:
        table = export_csv(create_engine(db_url), args.export, summary.weights_sha256, summary.options)
        print(f"table → {table}")
    return 1 if summary.failed else 0


def _cmd_demo(args) -> int:
    from tqdm import tqdm

    from mccscan.clusters import MATCH_MARGIN_MM
    from mccscan.datasets.phantom import make_phantom
    from mccscan.metrics import compare_clusters
    from mccscan.render import save_scan
    from mccscan.scan import scan_file
    from mccscan.weights import load_detector

    out = Path(args.out)
    print(f"drawing a synthetic mammogram (seed {args.seed})…", flush=True)
    ph = make_phantom(args.seed, n_clusters=args.clusters)
    paths = ph.write(out, stem=f"phantom_{args.seed}")
    print(f"synthetic mammogram (seed {args.seed}, {ph.laterality}{ph.view}, {ph.image.shape[1]}×{ph.image.shape[0]} "
          f"at 70 µm, {len(ph.clusters)} true clusters) → {paths['dcm']}")
    loaded = load_detector(args.detector, args.weights)
    with tqdm(desc="scanning", unit="row", leave=False, disable=not sys.stderr.isatty()) as bar:
        result, image = scan_file(paths["dcm"], loaded, threshold=args.threshold, on_row=lambda tiles: bar.update(1))
    written = save_scan(result, image, out)
    print(f"scanned in {result.elapsed_s:.2f} s ({result.detector} detector): {len(result.findings)} cluster(s) at "
          f"score ≥ {result.threshold:.3f}")
    print_findings(result)
    print(compare_clusters(result.findings, [c.outline for c in ph.clusters],
                           MATCH_MARGIN_MM / ph.pixel_spacing_mm).summary())
    print(f"overlay (clusters outlined in red) → {written['overlay']}, preview → {written['preview']}")
    print(f"results → {written['json']}, {written['clusters']}, {written['csv']}")
    print(f"model: {loaded.name} ({loaded.card.get('trained_on', 'unknown training data')})")
    return 0


def _number(value: float | None) -> str:
    """A metric for the terminal; '–' where there was nothing to measure."""
    return "–" if value is None else f"{value:.3f}"


def print_findings(result) -> None:
    """One line per reported cluster."""
    mm = result.pixel_spacing_mm
    for c in result.findings:
        what = f"{c.n_mcs} MCs" if c.n_mcs else f"{len(c.tiles)} tile(s)"
        print(f"  cluster #{c.id}: score {c.score:.2f}, {what}, centre ({c.x:.0f}, {c.y:.0f}) px = "
              f"({c.x * mm:.1f}, {c.y * mm:.1f}) mm")


def _cmd_build_dataset(args) -> int:
    from mccscan.builder import build_dataset, card_table
    from mccscan.datasets import read_source
    from mccscan.patches import LabelRule

    start = time.perf_counter()
    index = read_source(args.source, args.root, pixel_spacing_mm=args.pixel_spacing, phantom_images=args.images)
    rule = LabelRule(min_mcs=args.min_mcs, min_cluster_overlap=args.min_cluster_overlap,
                     min_breast_fraction=args.min_breast_fraction, isolated_negative=args.isolated_negative)
    card = build_dataset(index, args.out, protocol=args.protocol, seed=args.seed, rule=rule,
                         augment=not args.no_augment, jitter_per_cluster=args.jitter,
                         insert_synthetic=args.insert_synthetic, progress=sys.stderr.isatty())
    print(card_table(card))
    print(f"→ {args.out}/ (patches.npy, manifest.csv, card.json, contact_sheet.png) "
          f"in {time.perf_counter() - start:.1f} s")
    return 0


def _cmd_serve(args) -> int:
    import uvicorn

    from mccscan.web.app import create_app
    from mccscan.web.settings import Settings

    try:  # bind first: a port in use is a one-line error, and port 0 gets its real number
        sock = socket.create_server((args.host, args.port))
    except OSError as exc:
        raise MccscanError(f"cannot listen on {args.host}:{args.port} ({exc.strerror or exc})") from None
    host, port = sock.getsockname()[:2]
    settings = Settings(data_dir=Path(args.data_dir), detector=args.detector, weights=args.weights,
                        workers=args.workers, max_upload_bytes=args.max_upload_mb * 2**20, max_pixels=args.max_pixels,
                        threshold=args.threshold, allowed_hosts=Settings.hosts_for(args.host), pacs_url=args.pacs)
    app = create_app(settings)
    shown = f"[{host}]" if ":" in host else host
    print(f"mccscan web app on http://{shown}:{port}/ (API reference: /docs); "
          f"scans kept in {settings.data_dir}/", file=sys.stderr, flush=True)
    uvicorn.Server(uvicorn.Config(app, log_level="warning")).run(sockets=[sock])
    return 0


# ---- options, built for the command that runs ------------------------------------------

def _port(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{value} is not a TCP port (0–65535; 0 picks a free one)")
    return value


def _converted(text: str, convert: Callable[[str], float], noun: str):
    """`convert(text)`, or an argparse error saying the text is not `noun`."""
    try:
        return convert(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not {noun}") from None


def _unit_interval(what: str) -> Callable[[str], float]:
    """A number option that must lie in [0, 1] (a share of an area, a score)."""
    def parse(text: str) -> float:
        value = _converted(text, float, "a number")
        if not 0 <= value <= 1:
            raise argparse.ArgumentTypeError(f"{value:g} is not {what} in [0, 1]")
        return value
    return parse


_fraction, _score = _unit_interval("a fraction"), _unit_interval("a score")


def _at_least(minimum: int) -> Callable[[str], int]:
    """An integer option that cannot go below `minimum`."""
    def parse(text: str) -> int:
        value = _converted(text, int, "a whole number")
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{value} is below {minimum}")
        return value
    return parse


def _color(text: str) -> str:
    """A colour PIL can draw, refused before any scan rather than after each."""
    from PIL import ImageColor

    _converted(text, ImageColor.getrgb, "a colour (#rrggbb or a name such as red)")
    return text


def _phantom_formats(text: str) -> tuple[str, ...]:
    """Comma-separated image formats `Phantom.write` knows."""
    from mccscan.datasets.phantom import IMAGE_FORMATS

    formats = tuple(f.strip() for f in text.split(","))
    unknown = [f for f in formats if f not in IMAGE_FORMATS]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown format {', '.join(map(repr, unknown))} "
                                         f"(known: {', '.join(IMAGE_FORMATS)})")
    return formats


def _args_info(p) -> None:
    pass


def _args_phantom(p) -> None:
    from mccscan.datasets.phantom import SIZES

    p.add_argument("--out", default="phantoms", help="output folder")
    p.add_argument("--seed", type=int, default=0, help="first seed; the same seed draws the same image")
    p.add_argument("--count", type=_at_least(1), default=1, help="how many mammograms (seeds SEED, SEED+1, …)")
    p.add_argument("--size", choices=tuple(SIZES), default="large", help="large: 3328×4084, small: 2560×3328")
    p.add_argument("--view", choices=("CC", "MLO"), help="view (default: at random)")
    p.add_argument("--laterality", choices=("L", "R"), help="breast side (default: at random)")
    p.add_argument("--clusters", type=_at_least(0), help="number of MC clusters (default: 0–3 at random)")
    p.add_argument("--format", type=_phantom_formats, default="png,dcm", help="comma-separated: png, dcm")


def _args_train(p) -> None:
    from mccscan.paper import ARCHITECTURES
    from mccscan.train import TrainConfig

    p.add_argument("--data", help="a `mccscan build-dataset` folder (default: phantoms, see --phantom-images)")
    p.add_argument("--out", default="runs/phantom", help="run folder: best.pt, last.pt, metrics.csv, curves")
    p.add_argument("--bf16", action="store_true", help="bfloat16 autocast (faster on CPUs with BF16 support)")
    p.add_argument("--arch", default=TrainConfig.arch, choices=ARCHITECTURES, metavar="NAME",
                   help="proposed, a Table 1 name, lenet5, mobilenetv2 or mobilenetv2-paper-head (see `mccscan info`)")
    p.add_argument("--epochs", type=int, default=TrainConfig.epochs, help="epochs (the paper: 100)")
    p.add_argument("--batch-size", type=int, default=TrainConfig.batch_size, help="patches per step")
    p.add_argument("--lr", type=float, default=TrainConfig.learning_rate, help="Adam's learning rate")
    p.add_argument("--seed", type=int, default=TrainConfig.seed, help="seeds shuffling, dropout and the weights")
    p.add_argument("--no-augment", action="store_true", help="skip the ×5 geometric augmentation")
    p.add_argument("--patience", type=int, help="early stopping: epochs without a better validation result")
    p.add_argument("--phantom-images", type=int, default=24,
                   help="without --data: phantom mammograms to build OUT/data from")


def _args_train_detector(p) -> None:
    from mccscan.train_detector import DetectorTrainConfig

    p.add_argument("--out", default="runs/mc", help="run folder: mc.pt and its card mc.json")
    p.add_argument("--train-phantoms", type=int, default=DetectorTrainConfig.train_phantoms,
                   help="phantom mammograms to train on (exact MC truth)")
    p.add_argument("--val-phantoms", type=int, default=DetectorTrainConfig.val_phantoms,
                   help="phantoms for the best epoch and the operating point")
    p.add_argument("--negatives", type=int, default=DetectorTrainConfig.negatives_per_image,
                   help="candidates that are no MC, per training phantom")
    p.add_argument("--epochs", type=int, default=DetectorTrainConfig.epochs, help="epochs")
    p.add_argument("--seed", type=int, default=DetectorTrainConfig.seed, help="seeds sampling and weights")
    p.add_argument("--tissue", nargs="+", default=[], metavar="PATH",
                   help="real mammograms (files or folders) to insert phantom clusters into and train on too")
    p.add_argument("--tissue-spacing", type=float, default=None, metavar="MM",
                   help="pixel spacing of the --tissue images when their files carry none (CBIS-DDSM: 0.05)")
    p.add_argument("--tissue-draws", type=int, default=DetectorTrainConfig.tissue_draws,
                   help="insertions (1–3 clusters each) per real mammogram")
    p.add_argument("--tissue-isolated", type=_at_least(0), default=DetectorTrainConfig.tissue_isolated, metavar="N",
                   help="also put N lone MCs or pairs into each draw; every speck beside them is a negative "
                        "(over 3 seeds: on phantoms half the clusters of lone MCs, on held-out films no change "
                        "beyond the seeds' spread, see the README; default %(default)s)")
    p.add_argument("--isolated-repeats", type=_at_least(1), default=DetectorTrainConfig.isolated_repeats, metavar="R",
                   help="how many times each speck beside a --tissue-isolated MC counts (default %(default)s)")
    p.add_argument("--candidate-snr", type=float, default=DetectorTrainConfig.candidate_snr, metavar="SNR",
                   help="candidate specks: local maxima this many noise units above their surroundings")
    p.add_argument("--cosine-lr", action=argparse.BooleanOptionalAction, default=DetectorTrainConfig.cosine_lr,
                   help="decay the learning rate to 0 along a cosine (steadier last epochs than a constant rate)")
    p.add_argument("--wide-sigma", type=float, default=DetectorTrainConfig.wide_sigma_px, metavar="PX",
                   help="σ (70 µm px) of the background the candidate stage's high-pass removes")
    p.add_argument("--channels", type=int, nargs=4, default=DetectorTrainConfig.channels, metavar="C",
                   help="widths of MCNet's four conv layers")
    p.add_argument("--lookalike-repeats", type=int, default=DetectorTrainConfig.lookalike_repeats, metavar="N",
                   help="above 1: every candidate on a phantom's benign lookalike (vascular track, coarse, rim, skin) "
                        "is a negative, N times")
    p.add_argument("--context-pool", type=int, default=DetectorTrainConfig.context_pool, metavar="K",
                   help="odd K > 0: MCNet also sees the 27·K px (K = 5: 9.5 mm) around each speck, pooled K×K, so "
                        "a faint MC among others can count on them (default 0: the patch alone)")
    p.add_argument("--position-aware", action="store_true",
                   help="MCNet's dense layer sees its whole last conv map, not its global max, so it can know "
                        "where in the patch a bright MC is (measured no better on held-out films, see the README; "
                        "default: the global max)")
    p.add_argument("--no-acquisition", action="store_true",
                   help="train on images as drawn, without random pixel size, detector and contrast curve")
    p.add_argument("--operating-point-spacings", type=float, nargs="+", metavar="MM",
                   help="pixel sizes the validation phantoms are delivered at to choose the operating point "
                        f"(default {' '.join(map(str, DetectorTrainConfig.operating_point_spacings_mm))}; with "
                        "--recalibrate, the card's)")
    p.add_argument("--mc-floor", type=float, default=None, metavar="P",
                   help=f"P(MC) the scans build clusters from (default {DetectorTrainConfig.mc_floor}; with "
                        "--recalibrate, the card's)")
    p.add_argument("--recalibrate", action="store_true",
                   help="no training: choose OUT/mc.pt's operating point again on the validation phantoms")


def _args_evaluate(p) -> None:
    from mccscan.dataset_dir import SPLITS
    from mccscan.weights import DETECTORS

    p.add_argument("--data", help="a `mccscan build-dataset` folder (default: unseen phantoms, see --phantoms)")
    p.add_argument("--phantoms", type=_at_least(1), default=50, help="without --data: how many unseen phantoms")
    p.add_argument("--detector", choices=tuple(DETECTORS),
                   help="which shipped weights (default: mc on phantoms; paper with --data, whose patch metrics "
                        "need the paper's net)")
    p.add_argument("--weights", help=WEIGHTS_HELP)
    p.add_argument("--split", default="test", choices=SPLITS, help="which split to evaluate")
    p.add_argument("--out", default="mccscan-eval", help="folder for evaluation.json (and, with --data, the plots)")
    p.add_argument("--bootstrap", type=_at_least(0), default=1000, help="bootstrap resamples for the 95%% intervals")
    p.add_argument("--pixel-spacing", type=float,
                   help="mm; with --data, to re-read a CBIS-DDSM source for the FROC; without, deliver the phantoms "
                        "at this pixel size (e.g. 0.14) and scan them as files of that spacing")


def _args_tune(p) -> None:
    from mccscan.tune import TuneConfig

    p.add_argument("--data", required=True, help="a `mccscan build-dataset` folder")
    p.add_argument("--out", default="runs/tune", help="trials, best.json, table.md")
    p.add_argument("--storage", help="Optuna storage URL shared by workers (default: sqlite:///OUT/study.db; "
                   "postgresql://user:pass@host/db for several machines)")
    p.add_argument("--study-name", default=TuneConfig.study_name, help="workers sharing a study use the same name")
    p.add_argument("--trials", type=int, default=TuneConfig.trials, help="trials this worker runs")
    p.add_argument("--max-epochs", type=int, default=TuneConfig.max_epochs, help="Hyperband's largest budget")
    p.add_argument("--max-train-patches", type=int, help="train each trial on a random subset of this size")
    p.add_argument("--seed", type=int, default=TuneConfig.seed, help="give each worker its own seed")
    p.add_argument("--bf16", action="store_true", help="bfloat16 autocast for training")


def _args_explain(p) -> None:
    from mccscan.dataset_dir import SPLITS

    p.add_argument("--weights", help="the paper's net: weights .pt with its model card beside it (default: the "
                   "shipped ones)")
    p.add_argument("--data", help="a `mccscan build-dataset` folder (default: patches of 4 phantom mammograms)")
    p.add_argument("--split", default="test", choices=SPLITS, help="which split's patches")
    p.add_argument("--out", default="mccscan-explain", help="folder for the figures")


def _args_reproduce(p) -> None:
    p.add_argument("--data", help="a `mccscan build-dataset` folder (default: build a phantom one in OUT/data)")
    p.add_argument("--out", default="mccscan-report", help="report folder")
    p.add_argument("--quick", action="store_true", help="minutes: 3 epochs, training subsets, no tuning")
    p.add_argument("--epochs", type=int, help="override the epochs (paper: 100)")
    p.add_argument("--baseline-epochs", type=int, help="epochs for LeNet-5 and MobileNetV2 (default: --epochs)")
    p.add_argument("--table1-epochs", type=int, help="epochs for the other Table 1 rows (0: not trained)")
    p.add_argument("--max-train-patches", type=int, help="train Table 1 rows and baselines on a subset")
    p.add_argument("--tune-trials", type=int, help="Hyperband trials (default: 40; 0 skips tuning)")
    p.add_argument("--tune-max-epochs", type=int, help="Hyperband's largest budget (default: 27)")
    p.add_argument("--bf16", action="store_true", help="bfloat16 autocast for training")
    p.add_argument("--seed", type=int, default=0, help="seeds the data split and every model")
    p.add_argument("--pixel-spacing", type=float, help="mm; to re-read a CBIS-DDSM source for the FROC")
    p.add_argument("--phantom-images", type=int, default=6, help="without --data: phantom mammograms to build")


def _args_scan(p) -> None:
    from mccscan.render import NORMAL_COLOR, STYLES
    from mccscan.scan import ENGINES

    p.add_argument("images", nargs="*", help="mammogram files (PNG, JPEG, TIFF, PGM, DICOM; the content decides)")
    p.add_argument("--out", default="mccscan-out", help="output folder; same-named inputs get distinct names")
    _args_scan_common(p)
    p.add_argument("--style", choices=STYLES, default=STYLES[0],
                   help="overlay: outline draws each cluster in red; paper lightens normal tiles as the paper did")
    p.add_argument("--normal-color", type=_color, default=NORMAL_COLOR,
                   help="paper style: colour normal tiles are lightened to")
    p.add_argument("--mcc-color", type=_color, default=None,
                   help="paper style: tint for MCC tiles (default: shown as they are)")
    p.add_argument("--engine", choices=ENGINES, default=ENGINES[0],
                   help="how tiles go through the model; all give the same scores")
    p.add_argument("--dicom", action="store_true",
                   help="also write NAME.sr.dcm (DICOM SR, TID 1500: the clusters) and NAME.pmap.dcm (parametric "
                        "map of the cluster score) for DICOM inputs")
    p.add_argument("--dicomweb", metavar="URL", help="scan images in a PACS instead of files: its DICOMweb root "
                   "(e.g. http://pacs:8042/dicom-web); SR and map are always written")
    p.add_argument("--study", help="with --dicomweb: Study Instance UID")
    p.add_argument("--series", help="with --dicomweb: Series Instance UID")
    p.add_argument("--instance", help="with --dicomweb: SOP Instance UID")
    p.add_argument("--send", action="store_true", help="with --dicomweb: store the SR and map into the image's study")


def _args_scan_common(p) -> None:
    """Options of every command that scans: where results go, spacing, limits, detector."""
    from mccscan.io import DEFAULT_MAX_PIXELS
    from mccscan.scan import DEFAULT_MIN_BREAST_FRACTION
    from mccscan.weights import DEFAULT_DETECTOR, DETECTORS

    p.add_argument("--pixel-spacing", type=float, help="pixel spacing in mm (overrides the file's; "
                   "PNG/JPEG/TIFF/PGM without one are taken as 0.07)")
    p.add_argument("--max-pixels", type=_at_least(1), default=DEFAULT_MAX_PIXELS,
                   help="refuse larger images, as stored or once resampled to 0.07 mm")
    p.add_argument("--detector", choices=tuple(DETECTORS), default=DEFAULT_DETECTOR, help=DETECTOR_HELP)
    p.add_argument("--threshold", type=_score, help=THRESHOLD_HELP)
    p.add_argument("--weights", help=WEIGHTS_HELP)
    p.add_argument("--min-breast-fraction", type=_fraction, default=DEFAULT_MIN_BREAST_FRACTION,
                   help="the tiles scanned: those the breast covers by this fraction (the mc detector finds MCs "
                   "in all the breast; its map shows these tiles)")


def _args_batch(p) -> None:
    p.add_argument("source", help="a folder (every image in it, found by content), a CSV of paths, or a PACS's "
                   "DICOMweb root (with --studies)")
    p.add_argument("--studies", metavar="FILE", help="with a DICOMweb source: Study Instance UIDs, one a line")
    p.add_argument("--db", help="results database: sqlite:///PATH or postgresql://user:pass@host/db "
                   "(default: OUT/results.sqlite3)")
    p.add_argument("--out", default="mccscan-batch", help="folder for the default SQLite database")
    p.add_argument("--workers", type=_at_least(1), default=1, help="scan workers (Ray actors, each holding the model)")
    p.add_argument("--ray-address", help="a Ray cluster to run on (e.g. ray://head:10001 or auto); "
                   "default: Ray started in this process")
    p.add_argument("--export", metavar="CSV", help="write the results table for these weights to a CSV at the end")
    _args_scan_common(p)


def _args_watch(p) -> None:
    from mccscan.dicomweb import DEFAULT_BATCH_SIZE, DEFAULT_POLL_S

    p.add_argument("--dicomweb", metavar="URL", required=True, help="the PACS's DICOMweb root, e.g. "
                   "http://pacs:8042/dicom-web")
    p.add_argument("--changes-url", help="Orthanc's REST root, for its /changes feed (default: the DICOMweb URL "
                   "without /dicom-web)")
    p.add_argument("--out", default="mccscan-watch", help="results and the resumable state (watch-state.json)")
    p.add_argument("--no-send", action="store_true", help="keep results local; do not store them in the PACS")
    p.add_argument("--poll", type=float, default=DEFAULT_POLL_S, help="seconds between looks at the feed when idle")
    p.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE, help="changes held at once")
    p.add_argument("--once", action="store_true", help="handle what is new, then stop (default: run until stopped)")
    p.add_argument("--from-start", action="store_true", help="a first watch also scans the images already in "
                   "the PACS (default: only those stored after it starts)")
    _args_scan_common(p)


def _args_demo(p) -> None:
    from mccscan.weights import DEFAULT_DETECTOR, DETECTORS

    p.add_argument("--out", default="mccscan-demo", help="output folder")
    p.add_argument("--seed", type=int, default=7, help="which phantom to draw")
    p.add_argument("--clusters", type=_at_least(0), default=3, help="true MC clusters in it")
    p.add_argument("--detector", choices=tuple(DETECTORS), default=DEFAULT_DETECTOR, help=DETECTOR_HELP)
    p.add_argument("--threshold", type=_score, help=THRESHOLD_HELP)
    p.add_argument("--weights", help=WEIGHTS_HELP)


def _args_build_dataset(p) -> None:
    from mccscan.builder import PROTOCOLS
    from mccscan.datasets import SOURCES
    from mccscan.patches import LabelRule

    p.add_argument("--source", required=True, choices=SOURCES, help="which dataset layout to read")
    p.add_argument("--root", required=True, help="the dataset's folder (for phantom: where to write it)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--protocol", choices=PROTOCOLS, default=PROTOCOLS[0],
                   help="patient: split by patient first; paper: the paper's patch-level split")
    p.add_argument("--seed", type=int, default=0, help="seeds the split, the balance and the jitter")
    p.add_argument("--pixel-spacing", type=float, help="mm; required for cbis-ddsm (its DICOMs carry none)")
    p.add_argument("--images", type=int, default=10, help="phantom: how many mammograms to write")
    p.add_argument("--min-mcs", type=int, default=LabelRule.min_mcs, help="MCs inside for a positive patch")
    p.add_argument("--min-cluster-overlap", type=_fraction, default=LabelRule.min_cluster_overlap,
                   help="or this fraction of the smaller of patch and cluster covered")
    p.add_argument("--min-breast-fraction", type=_fraction, default=LabelRule.min_breast_fraction,
                   help="breast share of a negative patch")
    p.add_argument("--isolated-negative", action="store_true",
                   help="windows with only 1–2 isolated MCs are negatives (hard negatives), not left out")
    p.add_argument("--jitter", type=int, default=8, help="off-centre windows per cluster")
    p.add_argument("--no-augment", action="store_true", help="skip the ×5 geometric augmentation")
    p.add_argument("--insert-synthetic", type=int, default=0, metavar="N",
                   help="put N phantom MC clusters into each normal mammogram: exact positives on real tissue")


def _args_serve(p) -> None:
    from mccscan.io import DEFAULT_MAX_PIXELS
    from mccscan.weights import DEFAULT_DETECTOR, DETECTORS

    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=_port, default=8000, help="TCP port (0: any free one, printed at start)")
    p.add_argument("--data-dir", default="mccscan-data", help="scan history and files")
    p.add_argument("--weights", help=WEIGHTS_HELP)
    p.add_argument("--workers", type=_at_least(1), default=1, help="scans run at once")
    p.add_argument("--max-upload-mb", type=_at_least(1), default=200, help="largest upload in MB")
    p.add_argument("--max-pixels", type=_at_least(1), default=DEFAULT_MAX_PIXELS,
                   help="refuse larger images, as stored or once resampled to 0.07 mm")
    p.add_argument("--detector", choices=tuple(DETECTORS), default=DEFAULT_DETECTOR, help=DETECTOR_HELP)
    p.add_argument("--threshold", type=_score, help=THRESHOLD_HELP)
    p.add_argument("--pacs", metavar="URL", help="DICOMweb root (e.g. http://pacs:8042/dicom-web) that a finished "
                   "DICOM scan can be sent to from the page: SR and parametric map, into the image's study")


@dataclass(frozen=True)
class Command:
    help: str
    arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


COMMANDS = {
    "info": Command("architectures, parameter counts, FLOPs per patch, this machine's peak", _args_info, _cmd_info),
    "phantom": Command("write synthetic mammograms (PNG + DICOM + ground-truth JSON)", _args_phantom, _cmd_phantom),
    "scan": Command("scan mammograms; write overlays, previews, JSON and CSV", _args_scan, _cmd_scan),
    "batch": Command("scan a whole archive on Ray into SQLite or PostgreSQL; rerun to resume", _args_batch,
                     _cmd_batch),
    "watch": Command("follow a PACS (Orthanc) and scan each new MG image once, storing SR and map back",
                     _args_watch, _cmd_watch),
    "demo": Command("make a phantom mammogram, scan it, compare with its true clusters", _args_demo, _cmd_demo),
    "serve": Command("the web app: drop a mammogram, watch it being scanned", _args_serve, _cmd_serve),
    "build-dataset": Command("turn a dataset on disk into labelled 144×144 patches", _args_build_dataset,
                             _cmd_build_dataset),
    "train": Command("train (the paper's protocol) on a built dataset or on phantoms", _args_train, _cmd_train),
    "train-detector": Command("train the two-stage cluster detector (MC candidates → CNN → ≥ 3 MCs in 1 cm²) "
                              "on phantoms and, with --tissue, real mammograms with inserted clusters",
                              _args_train_detector, _cmd_train_detector),
    "evaluate": Command("patch metrics with 95% CIs, calibration and FROC on a built dataset", _args_evaluate,
                        _cmd_evaluate),
    "tune": Command("Hyperband search over the paper's Table 2 space (Optuna)", _args_tune, _cmd_tune),
    "explain": Command("the paper's Figs. 3–5: feature maps, filter response, mean F2", _args_explain, _cmd_explain),
    "reproduce": Command("the paper's experiments end to end → OUT/report.md", _args_reproduce, _cmd_reproduce),
}


def build_parser(argv: list[str]) -> argparse.ArgumentParser:
    """The parser, with the options of the command named in `argv` (the others list by name)."""
    parser = argparse.ArgumentParser(prog="mccscan", description="Find microcalcification clusters in mammograms "
                                     "with the lightweight CNN of Luna-Lozoya et al. (2024).")
    parser.add_argument("--version", action="version", version=f"mccscan {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    chosen = next((a for a in argv if not a.startswith("-")), None)
    for name, command in COMMANDS.items():
        p = sub.add_parser(name, help=command.help.replace("%", "%%"), formatter_class=HELP,
                           description=command.help[0].upper() + command.help[1:] + ".")
        if name == chosen:
            command.arguments(p)
            p.set_defaults(func=command.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser(argv).parse_args(argv)
    try:
        return args.func(args)
    except MccscanError as exc:  # anything else is a bug and keeps its traceback
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
