"""Train the two-stage cluster detector: `mccscan train-detector`.

Reads top to bottom: draw phantoms (exact MC truth) and, with `--tissue`, put phantom
clusters into real mammograms (exact truth on real tissue: every other speck there is a
negative); pass each through a random acquisition (pixel size 50–200 µm, digital or film,
contrast curve); find the candidate specks as a scan does, label each candidate MC or not
(within an MC's radius + 2 px of its centre), train `MCNet` on the candidate patches
(8 dihedral copies, BCE, Adam with a cosine-decaying rate), keep the epoch
with the best validation loss, then scan the validation phantoms whole, delivered at each
pixel size training covers, and choose the operating point: the cluster score with the
highest sensitivity at ≤ 0.5 false clusters per image. Weights, the operating point and
the card land in OUT/ (mc.pt + mc.json). Seeds never overlap the evaluation phantoms
(`evaluate.EVAL_PHANTOM_SEEDS`). The data are drawn from the seed and each epoch's order
from (seed, epoch), so a run killed mid-way resumes from OUT/last.pt and ends with the
same weights.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F
from tqdm import tqdm

from mccscan.atomic import atomic_write_text
from mccscan.datasets.acquisition import acquire, draw_acquisition
from mccscan.datasets.folder import image_files
from mccscan.errors import InputError
from mccscan.datasets.phantom import insert_clusters, insert_isolated, make_phantom
from mccscan.io import CLI_HINTS, MammogramError, load_for_scan
from mccscan.tiling import breast_mask
from mccscan.mcdetect import CANDIDATE_SNR, COARSE_MM, MC_FLOOR, WIDE_SIGMA_PX, find_candidates
from mccscan.evaluate import scan_phantoms
from mccscan.scan import detector_options
from mccscan.metrics import cluster_froc, operating_point
from mccscan.models import MCNet, MCNetConfig
from mccscan.train import load_checkpoint, save_checkpoint
from mccscan.weights import card_path, load_model, save_weights

TRAIN_SEEDS = range(200_000, 201_000)  # the first `train_phantoms` of them
VAL_SEEDS = range(210_000, 210_100)
MAX_FP_PER_IMAGE = 0.5  # the default operating point's budget
OPERATING_POINT_SPACINGS_MM = (0.05, 0.07, 0.1, 0.14, 0.2)  # it must hold at every pixel size training covers
TISSUE_HINTS = {**CLI_HINTS, "pixel_spacing": "give it in mm with --tissue-spacing"}  # a --tissue file's fixes
ISOLATED_STREAM = 1  # seeds the lone MCs' own random stream with (seed, film, draw): the main one stays as it was


@dataclass
class DetectorTrainConfig:  # the defaults are the shipped weights' recipe (give --tissue and --tissue-spacing)
    train_phantoms: int = 80
    val_phantoms: int = 20
    negatives_per_image: int = 2000  # candidates that are no MC, half at random, half the brightest
    epochs: int = 16
    batch_size: int = 256
    learning_rate: float = 1e-3
    cosine_lr: bool = True  # decay the learning rate to 0 along a cosine over the run, batch by batch
    seed: int = 0
    size: str = "small"  # phantom size for training (the evaluation uses "large")
    acquisition: bool = True  # random pixel size, detector and contrast curve per image
    tissue: tuple[str, ...] = ()  # real mammograms (files or folders) to insert phantom clusters into
    tissue_spacing_mm: float | None = None  # their pixel spacing when the files lack one
    tissue_draws: int = 12  # insertions (1–3 clusters each) per real mammogram
    tissue_isolated: int = 0  # lone MCs or pairs put into each insertion too, the specks beside them hard negatives
    isolated_repeats: int = 1  # how many times each of those hard negatives counts
    candidate_snr: float = CANDIDATE_SNR  # the candidate stage's threshold, in training and in the scans
    wide_sigma_px: float = WIDE_SIGMA_PX  # the background its high-pass removes, likewise
    channels: tuple[int, ...] = MCNetConfig.channels  # MCNet's conv widths
    operating_point_spacings_mm: tuple[float, ...] = OPERATING_POINT_SPACINGS_MM  # the validation scans' pixel sizes
    mc_floor: float = MC_FLOOR  # the P(MC) its scans build clusters from
    lookalike_repeats: int = 1  # > 1: every candidate on a phantom's benign lookalike is a negative, this many times
    context_pool: int = 0  # > 0: MCNet also sees the square centimetre around each speck (`MCNetConfig.context_pool`)
    position_aware: bool = False  # MCNet tells the centre speck from a bright neighbour (`MCNetConfig.position_aware`)


def mc_reach_px(mc_radius_px):
    """How far from an MC's centre a candidate still finds it: its radius + 2 px, at least 3 px."""
    return np.maximum(3.0, np.asarray(mc_radius_px) + 2.0)


def candidate_labels(mc_xy: np.ndarray, mc_radius_px: np.ndarray, xy: np.ndarray) -> np.ndarray:
    """1 where a candidate lies within an MC's reach (`mc_reach_px`) of its centre."""
    from scipy.spatial import cKDTree

    if not len(mc_xy) or not len(xy):
        return np.zeros(len(xy), np.uint8)
    reach = mc_reach_px(mc_radius_px)
    dist, nearest = cKDTree(mc_xy).query(xy)
    return (dist <= reach[nearest]).astype(np.uint8)


def candidate_samples(image: np.ndarray, breast: np.ndarray, mcs: list, config: DetectorTrainConfig,
                      rng: np.random.Generator, hard: list = (), repeats: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Candidate patches of one image as a scan finds them, after a random acquisition when
    the config asks: every MC, the brightest non-MCs and as many at random, and every non-MC
    candidate within `hard` places' radius + 10 px, `repeats` times (once with 1: kept, not
    sampled): the specks of a vascular track look like MCs one by one, and a speck beside a
    lone bright MC sees it in its patch."""
    if config.acquisition:
        image = acquire(image, breast, draw_acquisition(rng), rng)
    cands = find_candidates(image, breast, max_candidates=20_000, snr=config.candidate_snr,
                            wide_sigma_px=config.wide_sigma_px, context_pool=config.context_pool)
    y = candidate_labels(np.array([(m.x, m.y) for m in mcs]).reshape(-1, 2),
                         np.array([m.radius_px for m in mcs]), cands.xy)
    near_hard = np.zeros(len(y), bool)
    for b in hard:
        near_hard |= np.hypot(*(cands.xy - (b.x, b.y)).T) <= b.radius_px + 10
    near_hard &= y == 0
    neg = np.flatnonzero((y == 0) & ~near_hard)
    half = config.negatives_per_image // 2
    brightest = neg[:half]  # candidates come brightest first
    rest = neg[half:]
    sampled = rng.choice(rest, min(len(rest), half), replace=False) if len(rest) else rest
    keep = np.sort(np.concatenate([np.flatnonzero(y == 1), brightest, sampled,
                                   np.repeat(np.flatnonzero(near_hard), repeats)]))
    return cands.patches[keep], y[keep]


def phantom_samples(seeds, config: DetectorTrainConfig, rng: np.random.Generator, progress: bool):
    """Candidate patches and labels of one phantom per seed."""
    parts = []
    for seed in tqdm(list(seeds), desc="phantoms", unit="img", disable=not progress):
        ph = make_phantom(int(seed), size=config.size, n_clusters=int(rng.integers(1, 5)))
        hard = ph.lookalikes if config.lookalike_repeats > 1 else ()
        parts.append(candidate_samples(ph.image, ph.breast_mask, ph.mcs, config, rng, hard, config.lookalike_repeats))
    return tuple(np.concatenate(a) for a in zip(*parts))


def tissue_samples(paths: list[Path], config: DetectorTrainConfig, rng: np.random.Generator, progress: bool):
    """Candidate patches and labels of real mammograms with phantom clusters inserted,
    `tissue_draws` times each: the tissue's own specks are the negatives. With
    `tissue_isolated`, lone MCs and pairs too (away from the clusters, drawn from a stream of
    their own), and the specks beside them are hard negatives, `isolated_repeats` times."""
    parts = []
    for index, path in enumerate(tqdm(paths, desc="tissue", unit="img", disable=not progress)):
        try:
            image = load_for_scan(path, pixel_spacing_mm=config.tissue_spacing_mm).image
        except MammogramError as exc:  # its own option, not the scan's --pixel-spacing
            raise MammogramError(path, exc.problem_and_fix(TISSUE_HINTS), exc.reason) from exc
        breast = breast_mask(image)
        for draw in range(config.tissue_draws):
            inserted, mcs, clusters = insert_clusters(image, breast, rng, int(rng.integers(1, 4)))
            lone = []
            if config.tissue_isolated:
                own_stream = np.random.default_rng((config.seed, index, draw, ISOLATED_STREAM))
                inserted, lone = insert_isolated(inserted, breast, own_stream, config.tissue_isolated,
                                                 avoid=[(c.x, c.y) for c in clusters])
            parts.append(candidate_samples(inserted, breast, mcs + lone, config, rng, lone, config.isolated_repeats))
    return tuple(np.concatenate(a) for a in zip(*parts))


def dihedral(batch: torch.Tensor, k: int) -> torch.Tensor:
    """The k-th of the 8 rotations/mirrors of (N, C, H, W), every channel alike."""
    out = torch.rot90(batch, k % 4, dims=(-2, -1))
    return out.flip(-1) if k >= 4 else out


def train_detector(out_dir: str | Path, config: DetectorTrainConfig = DetectorTrainConfig(), *,
                   progress: bool = True, command: str = "") -> dict:
    too_few = min(config.train_phantoms, config.val_phantoms, config.epochs, config.lookalike_repeats) < 1
    if too_few or (config.tissue and config.tissue_draws < 1):
        raise InputError("train-detector needs at least 1 training and 1 validation phantom, 1 epoch, 1 lookalike "
                         "repeat and, with --tissue, 1 draw per mammogram")
    if config.tissue_isolated < 0 or config.isolated_repeats < 1 or (config.tissue_isolated and not config.tissue):
        raise InputError(f"train-detector needs ≥ 0 isolated sites per draw (got {config.tissue_isolated}), ≥ 1 "
                         f"isolated repeat (got {config.isolated_repeats}) and, for isolated sites, --tissue")
    try:
        net_config = MCNetConfig(channels=config.channels, context_pool=config.context_pool,
                                 position_aware=config.position_aware)
    except ValueError as exc:
        raise InputError(f"the MC network: {exc}") from exc
    if config.wide_sigma_px < 1.5 or config.candidate_snr <= 0:
        raise InputError(f"the candidate stage needs --wide-sigma ≥ 1.5 px (got {config.wide_sigma_px}) and a positive "
                         f"--candidate-snr (got {config.candidate_snr})")
    check_operating_point_settings(config.operating_point_spacings_mm, config.mc_floor)
    tissue_files = image_files(config.tissue)  # a missing folder fails now, not after the phantoms
    out_dir = Path(out_dir)
    done = finished_card(out_dir, config)
    if done is not None:
        print(f"{out_dir / 'mc.pt'}: already trained with these settings, operating point chosen; nothing to do",
              flush=True)
        return done
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(config.seed)
    torch.manual_seed(config.seed)

    # data: candidate patches of training and validation phantoms
    start = time.perf_counter()
    train_x, train_y = phantom_samples(TRAIN_SEEDS[:config.train_phantoms], config, rng, progress)
    if config.tissue:
        tissue_x, tissue_y = tissue_samples(tissue_files, config, rng, progress)
        print(f"{len(tissue_y)} candidates ({int(tissue_y.sum())} MCs) from {len(tissue_files)} real mammograms",
              flush=True)
        train_x, train_y = np.concatenate([train_x, tissue_x]), np.concatenate([train_y, tissue_y])
    val_x, val_y = phantom_samples(VAL_SEEDS[:config.val_phantoms], config, rng, progress)
    print(f"{len(train_y)} training candidates ({int(train_y.sum())} MCs), {len(val_y)} validation "
          f"({int(val_y.sum())} MCs) in {time.perf_counter() - start:.0f} s", flush=True)

    # model and optimiser; positives weighted to balance the classes
    model = MCNet(net_config)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.learning_rate)
    steps = config.epochs * -(-len(train_y) // config.batch_size)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: 0.5 * (1 + np.cos(np.pi * step / steps)) if config.cosine_lr else 1.0)
    pos_weight = torch.tensor((len(train_y) - train_y.sum()) / max(train_y.sum(), 1), dtype=torch.float32)
    x_t, y_t = torch.from_numpy(train_x), torch.from_numpy(train_y.astype(np.float32))  # (N, channels, 27, 27)
    vx, vy = torch.from_numpy(val_x), torch.from_numpy(val_y.astype(np.float32))

    # resume: the same training continues (the operating point's settings may change); without
    # the cosine rate, --epochs may grow
    start_epoch, best_loss, history = 0, float("inf"), []
    last_path = out_dir / "last.pt"
    if last_path.is_file():
        state = load_checkpoint(last_path)
        saved = saved_config(state)
        if training_settings({**saved, "epochs": config.epochs}) == training_settings(asdict(config)) and (
                saved["epochs"] == config.epochs or (not config.cosine_lr and state["epoch"] < config.epochs)):
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            schedule.load_state_dict(state["schedule"])
            start_epoch, best_loss, history = state["epoch"] + 1, state["best_loss"], state["history"]
            print(f"resuming from {last_path} at epoch {start_epoch + 1}", flush=True)
        else:
            print(f"{last_path} belongs to a different configuration; starting afresh", flush=True)

    for epoch in range(start_epoch, config.epochs):
        model.train()
        order = torch.randperm(len(y_t), generator=torch.Generator().manual_seed(config.seed * 1000 + epoch))
        start, loss_sum = time.perf_counter(), 0.0
        for i in range(0, len(order), config.batch_size):
            index = order[i:i + config.batch_size]
            x = dihedral(x_t[index], (epoch + i // config.batch_size) % 8)
            loss = F.binary_cross_entropy_with_logits(model(x), y_t[index], pos_weight=pos_weight)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            loss_sum += loss.item() * len(index)
        model.eval()
        with torch.inference_mode():
            val_logit = torch.cat([model(vx[i:i + 2048]) for i in range(0, len(vx), 2048)])
            val_loss = float(F.binary_cross_entropy_with_logits(val_logit, vy, pos_weight=pos_weight))
        recall = float(((val_logit > 0) & (vy > 0)).sum() / max(vy.sum(), 1))
        false_rate = float(((val_logit > 0) & (vy == 0)).sum() / max((vy == 0).sum(), 1))
        history.append({"epoch": epoch + 1, "train_loss": loss_sum / len(order), "val_loss": val_loss,
                        "val_mc_recall": recall, "val_false_rate": false_rate})
        improved = val_loss < best_loss
        if improved:
            best_loss = val_loss
            save_weights(model, out_dir / "mc.pt", {"name": "mc", "epoch": epoch + 1})
        print(f"epoch {epoch + 1:3d}  loss {loss_sum / len(order):.4f}  val_loss {val_loss:.4f}  MC recall "
              f"{recall:.3f}  false {false_rate:.4f}  {time.perf_counter() - start:.0f} s"
              + ("  *best*" if improved else ""), flush=True)
        save_checkpoint(last_path, {"config": asdict(config), "model": model.state_dict(),
                                    "optimizer": optimizer.state_dict(), "schedule": schedule.state_dict(),
                                    "epoch": epoch, "best_loss": best_loss, "history": history})

    card = json.loads(card_path(out_dir / "mc.pt").read_text())
    card.update({
        "detector": "mc", "command": command, "train_config": asdict(config),
        "trained_on": "synthetic phantom (mccscan.datasets.phantom)" + (
            f" and {len(tissue_files)} real mammograms with phantom clusters inserted" if config.tissue else
            ", not patient data"),
        "data": {"train_seeds": [TRAIN_SEEDS.start, TRAIN_SEEDS.start + config.train_phantoms - 1],
                 "tissue": [p.name for p in tissue_files],
                 "val_seeds": [VAL_SEEDS.start, VAL_SEEDS.start + config.val_phantoms - 1],
                 "train_candidates": len(train_y), "train_mcs": int(train_y.sum())},
        "history": history,
    })
    atomic_write_text(card_path(out_dir / "mc.pt"), json.dumps(card, indent=2) + "\n")
    return choose_operating_point(out_dir / "mc.pt", config.val_phantoms, config.operating_point_spacings_mm,
                                  mc_floor=config.mc_floor, progress=progress, command=command)


def finished_card(out_dir: Path, config: DetectorTrainConfig) -> dict | None:
    """The card of the run in `out_dir` when it trained every epoch of `config` and chose its
    operating point with `config`'s settings and today's `COARSE_MM` (a card that names none
    predates the rule, which takes MCs away, so its threshold keeps to its budget), so that
    rerunning a finished command (a script over many runs) costs nothing; None otherwise."""
    last, card_file = out_dir / "last.pt", card_path(out_dir / "mc.pt")
    if not (last.is_file() and card_file.is_file()):
        return None
    state = load_checkpoint(last)
    card = json.loads(card_file.read_text())
    point = card.get("operating_point", {})
    validation = point.get("validation", {})
    chosen_alike = (point.get("mc_floor") == config.mc_floor and "cluster_threshold" in point and
                    point.get("coarse_mm", COARSE_MM) == COARSE_MM and
                    validation.get("phantoms") == config.val_phantoms and
                    validation.get("pixel_spacings_mm") == list(config.operating_point_spacings_mm))
    trained = (training_settings(saved_config(state)) == training_settings(asdict(config)) and
               state["epoch"] + 1 == config.epochs)
    return card if trained and chosen_alike else None


def saved_config(state: dict) -> dict:
    """The config a checkpoint ran with; settings added since take the defaults it ran with."""
    return {**asdict(DetectorTrainConfig()), **state["config"]}


def training_settings(config: dict) -> dict:
    """What decides the weights: the config less the operating point's settings."""
    return {k: v for k, v in config.items() if k not in ("mc_floor", "operating_point_spacings_mm")}


def check_operating_point_settings(pixel_spacings_mm, mc_floor: float | None) -> None:
    """Refuse, before any work, what `choose_operating_point` cannot use."""
    if not len(pixel_spacings_mm) or min(pixel_spacings_mm) <= 0:
        raise InputError(f"the operating point needs positive pixel spacings (mm), not {list(pixel_spacings_mm)}")
    if mc_floor is not None and not 0 < mc_floor < 1:
        raise InputError(f"the MC floor is a probability strictly between 0 and 1, not {mc_floor}")


def choose_operating_point(weights: str | Path, val_phantoms: int = 20,
                           pixel_spacings_mm: tuple[float, ...] | None = None, *,
                           mc_floor: float | None = None, progress: bool = False, command: str = "") -> dict:
    """Scan the validation phantoms whole, delivered at each of `pixel_spacings_mm`, with these
    weights and store, in their card, the cluster score with the highest sensitivity at
    ≤ MAX_FP_PER_IMAGE false clusters per image over all of them. The MC floor and the pixel
    sizes not given are the card's (its operating point, else its training config, else the
    first settings and OPERATING_POINT_SPACINGS_MM); the coarse rule is today's `COARSE_MM`."""
    loaded = load_model(weights)
    point, trained = loaded.card.get("operating_point", {}), loaded.card.get("train_config", {})
    if pixel_spacings_mm is None:
        pixel_spacings_mm = tuple(point.get("validation", {}).get("pixel_spacings_mm") or trained.get(
            "operating_point_spacings_mm") or OPERATING_POINT_SPACINGS_MM)
    check_operating_point_settings(pixel_spacings_mm, mc_floor)
    loaded.card["operating_point"] = {  # what the scans below use
        **detector_options(loaded), "coarse_mm": COARSE_MM, **({} if mc_floor is None else {"mc_floor": mc_floor})}
    val = scan_phantoms(loaded, VAL_SEEDS[:val_phantoms], pixel_spacings_mm=tuple(pixel_spacings_mm),
                        progress=progress)[0]  # the scan a user runs, on files of each spacing
    froc = cluster_froc(val, n_bootstrap=0)
    threshold = operating_point(froc, MAX_FP_PER_IMAGE)
    card = {**loaded.card, "operating_point": {
        **loaded.card["operating_point"], "cluster_threshold": threshold,
        "max_fp_per_image": MAX_FP_PER_IMAGE, "chosen_by": command,
        "validation": {"images": froc["images"], "clusters": froc["clusters"],
                       "phantoms": val_phantoms, "pixel_spacings_mm": list(pixel_spacings_mm),
                       "sensitivity_at_fp": {f: v["value"] for f, v in froc["sensitivity_at_fp"].items()}}}}
    atomic_write_text(card_path(weights), json.dumps(card, indent=2) + "\n")
    print(f"operating point: cluster score ≥ {threshold:.3f} (validation: "
          + ", ".join(f"{v['value']} at {f} FP/image" for f, v in froc["sensitivity_at_fp"].items()) + ")")
    return card
