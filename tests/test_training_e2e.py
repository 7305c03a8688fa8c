"""A tiny train -> export -> load run on generated photos, and the parity checks that guard it.

Parity: PyTorch and onnxruntime must agree on the exported graph (max abs diff <= 1e-4 on real
photos), and training's eval path must feed the model exactly the tensor the serving engine does.
"""

from __future__ import annotations

from datetime import date

import csv
import json
import random
from pathlib import Path

import numpy as np
import onnx
import pytest
from PIL import Image, ImageDraw

torch = pytest.importorskip("torch")

from flexguard.cli import main as cli_main  # noqa: E402
from flexguard.models.metadata import compute_weights_sha256, derived_version, read_info  # noqa: E402
from flexguard.models.preprocessing import PreprocessSpec, load_image, preprocess  # noqa: E402
from flexguard.models.taxonomy import CATEGORY_IDS  # noqa: E402
from flexguard.inference.engine import Engine  # noqa: E402
from flexguard.training import features  # noqa: E402
from flexguard.training.augment import AugmentConfig  # noqa: E402
from flexguard.training.export import load_checkpoint  # noqa: E402
from flexguard.training.train import TrainConfig, train  # noqa: E402

PARITY_TOLERANCE = 1e-4
GROUPS_PER_CLASS = 5
PHOTOS_PER_GROUP = 2
SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "flexdata"


def _photo(path: Path, rng: random.Random, hue: int) -> None:
    """A small synthetic photo: a coloured shape whose colour depends on the class, on a noisy ground."""
    size = (rng.randint(120, 200), rng.randint(120, 200))
    noise = np.random.default_rng(rng.randint(0, 2**31)).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    image = Image.fromarray(noise)
    draw = ImageDraw.Draw(image)
    box = (size[0] // 4, size[1] // 4, 3 * size[0] // 4, 3 * size[1] // 4)
    draw.ellipse(box, fill=Image.new("HSV", (1, 1), (hue, 255, 255)).convert("RGB").getpixel((0, 0)))
    image.save(path, quality=90)


@pytest.fixture(scope="module")
def tiny_manifest(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("tiny")
    rng = random.Random(0)
    classes = [*CATEGORY_IDS, "ordinary"]
    rows = []
    for index, name in enumerate(classes):
        for group in range(GROUPS_PER_CLASS):
            for photo in range(PHOTOS_PER_GROUP):
                relative = f"{name}/{group}_{photo}.jpg"
                (root / name).mkdir(exist_ok=True)
                _photo(root / relative, rng, hue=index * 255 // len(classes))
                rows.append({"path": relative, "category": name, "group": f"{name}:{group}"})
    manifest = root / "manifest.csv"
    with manifest.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["path", "category", "group"])
        writer.writeheader()
        writer.writerows(rows)
    return manifest


@pytest.fixture(scope="module")
def tiny_run(tiny_manifest, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("run")
    config = TrainConfig(
        manifests=[str(tiny_manifest)], out_dir=str(out), cache_dir=str(out / "cache"), views=2, epochs=1,
        steps_per_epoch=2, batch_size=8, probe_steps=5, workers=1,
    )
    return train(config)


@pytest.fixture(scope="module")
def tiny_onnx(tiny_run) -> Path:
    path = tiny_run / "model.onnx"
    assert cli_main(["export", "--checkpoint", str(tiny_run / "checkpoint.pt"), "--out", str(path)]) == 0
    return path


def _real_photos() -> list[np.ndarray]:
    from skimage import data

    photos = [data.astronaut(), data.coffee(), data.chelsea()]
    if SHARED.is_dir():
        photos += [np.asarray(Image.open(p).convert("RGB")) for p in sorted((SHARED / "images").glob("*/*.jpg"))[::700]]
    return photos


def test_training_writes_run_files(tiny_run):
    for name in ("checkpoint.pt", "probe.pt", "config.json", "history.jsonl"):
        assert (tiny_run / name).is_file(), name
    config = json.loads((tiny_run / "config.json").read_text())
    assert config["views"] == 2 and config["seed"] == 0
    stages = [json.loads(line)["stage"] for line in (tiny_run / "history.jsonl").read_text().splitlines()]
    assert stages == ["linear_probe", "linear_probe", "fine_tune"]


def test_exported_model_loads_and_describes_itself(tiny_onnx, tiny_manifest):
    engine = Engine(tiny_onnx)
    # No --model-version: the version is the export's date and the weights' digest, so a retrain never
    # shares one; the stamped digest is the one the engine computes from the weights.
    weights = compute_weights_sha256(tiny_onnx)
    assert read_info(tiny_onnx).weights_sha256 == engine.info.weights_sha256 == weights
    assert engine.info.version == derived_version(weights, date.today())
    assert engine.info.category_ids == CATEGORY_IDS
    assert engine.info.preprocess.size == 260
    assert len(engine.info.data_manifest_sha256) == 64
    assert 0 <= engine.info.thresholds.review <= engine.info.thresholds.block <= 1
    [result] = engine.score([next(tiny_manifest.parent.glob("luxury_car/*.jpg"))])
    assert set(result.scores) == set(CATEGORY_IDS)
    assert result.decision in ("allow", "review", "block")


def test_pytorch_and_onnx_agree_on_real_photos(tiny_run, tiny_onnx):
    net, _ = load_checkpoint(tiny_run / "checkpoint.pt")
    engine = Engine(tiny_onnx)
    from flexguard.models.preprocessing import preprocess

    batch = np.stack([preprocess(Image.fromarray(p), engine.info.preprocess)[0] for p in _real_photos()])
    with torch.no_grad():
        torch_scores, torch_cams = (t.numpy() for t in net(torch.from_numpy(batch)))
    onnx_scores, onnx_cams = engine.run(batch)
    assert np.abs(torch_scores - onnx_scores).max() <= PARITY_TOLERANCE
    assert np.abs(torch_cams - onnx_cams).max() <= PARITY_TOLERANCE * 10  # logits, before the sigmoid squashes them


def test_training_eval_path_feeds_the_same_tensor_as_the_engine(tiny_onnx, tiny_manifest, tmp_path):
    engine = Engine(tiny_onnx)
    photo = tmp_path / "phone.jpg"
    Image.fromarray(__import__("skimage").data.astronaut()).resize((1600, 1200)).save(photo, quality=92)
    features._init_worker(engine.info.preprocess, AugmentConfig(), [], 1)
    for path in (photo, next(tiny_manifest.parent.glob("designer_bag/*.jpg"))):
        [training_view] = features._views_of((path, 0))
        assert np.array_equal(training_view, engine.prepare(path).tensor)


def test_the_spec_travels_whole_from_training_to_serving(tiny_manifest, tmp_path):
    """A model trained on another spec (size, resize mode, mean, std) is exported and served with exactly it."""
    spec = PreprocessSpec(size=224, resize_mode="squash", mean=(120.0, 110.0, 100.0), std=(60.0, 61.0, 62.0))
    config = TrainConfig(
        manifests=[str(tiny_manifest)], out_dir=str(tmp_path / "run"), cache_dir=str(tmp_path / "cache"), views=1,
        epochs=1, steps_per_epoch=1, batch_size=8, probe_steps=2, workers=1, spec=spec,
    )
    run = train(config)
    assert torch.load(run / "checkpoint.pt", weights_only=False)["preprocess"] == spec.to_dict()
    model = tmp_path / "model.onnx"
    assert cli_main(["export", "--checkpoint", str(run / "checkpoint.pt"), "--out", str(model)]) == 0
    assert read_info(model).preprocess == spec
    engine = Engine(model)
    assert engine.info.preprocess == spec
    photo = next(tiny_manifest.parent.glob("luxury_car/*.jpg"))
    prepared = engine.prepare(photo)
    assert prepared.tensor.shape == (3, 224, 224)
    assert np.array_equal(prepared.tensor, preprocess(load_image(photo, spec), spec)[0])
    [result] = engine.score([photo])
    assert set(result.scores) == set(CATEGORY_IDS)


def test_export_refuses_missing_checkpoint(tmp_path, capsys):
    assert cli_main(["export", "--checkpoint", str(tmp_path / "nope.pt"), "--out", str(tmp_path / "x.onnx")]) == 2
    assert "checkpoint not found" in capsys.readouterr().err


@pytest.mark.parametrize("seeds", ["0", "two", "-1"])
def test_train_refuses_a_head_count_below_one(tmp_path, capsys, seeds):
    with pytest.raises(SystemExit) as stopped:
        cli_main(["train", str(tmp_path / "m.csv"), "--recipe", "ensemble", "--head-seeds", seeds])
    assert stopped.value.code == 2
    assert "--head-seeds" in capsys.readouterr().err


def test_train_refuses_missing_manifest(tmp_path, capsys):
    assert cli_main(["train", str(tmp_path / "missing.csv"), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "missing.csv" in err[0]


def test_evaluate_then_stamp_the_evaluation_into_the_model(tiny_onnx, tiny_manifest, tmp_path):
    stamped = tmp_path / "stamped.onnx"
    stamped.write_bytes(tiny_onnx.read_bytes())
    report = tmp_path / "eval"
    assert cli_main(["evaluate", "--model", f"tiny={stamped}", "--compare", f"again={tiny_onnx}",
                     "--manifest", str(tiny_manifest), "--out", str(report), "--stamp"]) == 0
    for name in ("report.md", "report.html", "metrics.json", "roc.png", "pr.png", "score_hist.png"):
        assert (report / name).is_file(), name
    evaluated = json.loads((report / "metrics.json").read_text())
    assert evaluated["primary"] == "tiny" and set(evaluated["models"]) == {"tiny", "again"}
    info = Engine(stamped).info
    assert info.validation_metrics["roc_auc"] == evaluated["models"]["tiny"]["roc_auc"]
    assert info.thresholds.review == evaluated["models"]["tiny"]["thresholds"]["review"]
    assert any("held-out validation" in note and "by group" in note for note in info.validation_metrics["evaluated_on"])
    assert Engine(tiny_onnx).info.validation_metrics["source"].startswith("training validation")


def test_quantized_copy_describes_itself_and_is_refused_past_the_auc_budget(tiny_onnx, tiny_manifest, tmp_path, capsys):
    int8 = tmp_path / "int8.onnx"
    assert cli_main(["quantize", "--model", str(tiny_onnx), "--manifest", str(tiny_manifest), "--out", str(int8),
                     "--calibration-photos", "8"]) == 0
    info = Engine(int8).info
    assert info.name.endswith("-int8") and info.category_ids == CATEGORY_IDS
    assert int8.stat().st_size < tiny_onnx.stat().st_size / 2
    # The networks are INT8 but the heads stay float: quantised scores would sit on a 1/255 grid, where
    # thresholds near 1 (the block threshold) cannot be placed and photos tie at the top.
    graph = onnx.load(str(int8)).graph
    producer = {output: node.op_type for node in graph.node for output in node.output}
    assert producer["scores"] == "Sigmoid" and producer["cam"] != "DequantizeLinear"
    assert any(node.op_type == "QuantizeLinear" for node in graph.node)
    capsys.readouterr()
    # A negative budget can never be met: the check must refuse with one line.
    assert cli_main(["evaluate", "--model", f"int8={int8}", "--compare", f"fp32={tiny_onnx}", "--manifest",
                     str(tiny_manifest), "--out", str(tmp_path / "e"), "--max-auc-drop", "-1"]) == 2
    assert "more than the allowed" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["train", "evaluate", "export", "serve", "import-folder"])
def test_every_command_explains_itself(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli_main([command, "--help"])
    assert exit_info.value.code == 0
    assert "usage: flexguard " + command in capsys.readouterr().out


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


def test_commands_refuse_an_unknown_category_with_one_line(tmp_path, tiny_onnx, capsys):
    Image.new("RGB", (32, 32)).save(tmp_path / "a.jpg")
    manifest = tmp_path / "manifest.csv"
    manifest.write_text("path,category\na.jpg,yacht\n")
    assert cli_main(["train", str(manifest), "--out", str(tmp_path / "run")]) == 2
    assert "yacht" in _one_line_error(capsys)
    assert cli_main(["evaluate", "--model", str(tiny_onnx), "--manifest", str(manifest), "--out", str(tmp_path / "e")]) == 2
    assert "yacht" in _one_line_error(capsys)


def test_commands_refuse_an_empty_split_with_one_line(tmp_path, tiny_onnx, capsys):
    # Every photo in one group: the grouped split cannot put anything on the validation side.
    rows = ["path,category,group"]
    for index, category in enumerate([*CATEGORY_IDS, "ordinary"]):
        Image.new("RGB", (32, 32)).save(tmp_path / f"{index}.jpg")
        rows.append(f"{index}.jpg,{category},one-source")
    manifest = tmp_path / "manifest.csv"
    manifest.write_text("\n".join(rows) + "\n")
    assert cli_main(["train", str(manifest), "--out", str(tmp_path / "run")]) == 2
    assert "split" in _one_line_error(capsys)
    assert cli_main(["evaluate", "--model", str(tiny_onnx), "--manifest", str(manifest), "--out", str(tmp_path / "e")]) == 2
    assert "split" in _one_line_error(capsys)


def test_the_view_queue_is_bounded_and_keeps_the_order():
    """Training memory is bounded by the queue, not the data set: no more photos in flight than allowed."""
    from concurrent.futures import ThreadPoolExecutor

    submitted, consumed, most = [], [], []

    def prepare(item: int) -> int:
        return item * 10

    class CountingPool(ThreadPoolExecutor):
        def submit(self, fn, *args):
            submitted.append(args[0])
            most.append(len(submitted) - len(consumed))
            return super().submit(fn, *args)

    with CountingPool(2) as pool:
        for value in features.bounded_map(pool, prepare, range(100), in_flight=4):
            consumed.append(value)
    assert consumed == [item * 10 for item in range(100)]
    assert max(most) == 4  # the oldest is handed out before the next is submitted


def test_evaluate_holds_out_whole_sources(tmp_path, tiny_onnx):
    """--by source: the validated photos' sources have no photo on the training side."""
    from flexguard.datasets import load_manifest
    from flexguard.datasets.splits import group_split

    manifest_path = tmp_path / "manifest.csv"
    rows = ["path,category,group,source_repo"]
    photos = tmp_path / "photos"
    photos.mkdir()
    rng = random.Random(1)
    for index, category in enumerate([*CATEGORY_IDS, "ordinary"]):
        for source in range(5):
            for style in range(2):
                name = f"{category}-{source}-{style}.jpg"
                _photo(photos / name, rng, hue=index * 40)
                rows.append(f"photos/{name},{category},owner/{category}-{source}:{style},owner/{category}-{source}")
    manifest_path.write_text("\n".join(rows) + "\n")
    manifest = load_manifest(manifest_path)
    train_idx, val_idx = group_split(manifest, by="source")
    assert not set(manifest.sources()[train_idx]) & set(manifest.sources()[val_idx])
    out = tmp_path / "eval"
    assert cli_main(["evaluate", "--model", str(tiny_onnx), "--manifest", str(manifest_path), "--out", str(out),
                     "--by", "source"]) == 0
    assert "by source" in json.loads((out / "metrics.json").read_text())["notes"][0]


def test_training_on_every_photo_then_stamping_cross_validation(tiny_manifest, tiny_onnx, tmp_path):
    """`make model`'s path: a model trained on every photo gets the figures of cross-validation."""
    run = tmp_path / "all"
    assert cli_main(["train", str(tiny_manifest), "--all", "--out", str(run), "--cache-dir", str(tmp_path / "cache"),
                     "--views", "2", "--epochs", "1", "--steps-per-epoch", "2", "--batch-size", "8", "--workers", "1"]) == 0
    history = [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines()]
    assert history[0] == {"stage": "linear_probe", "split": "none"}
    assert all("roc_auc" not in record for record in history)  # nothing to validate on: no figures
    model = run / "flexguard.onnx"
    assert cli_main(["export", "--checkpoint", str(run / "checkpoint.pt"), "--out", str(model)]) == 0
    assert "no validation" in read_info(model).validation_metrics["source"]
    # Every "fold model" is the tiny run's here; what matters is that the pooled figures land in the file.
    assert cli_main(["evaluate", "--split", "folds", "--n-folds", "2", "--model", f"cv={tiny_onnx}", "--manifest",
                     str(tiny_manifest), "--out", str(tmp_path / "cv"), "--stamp-into", str(model)]) == 0
    stamped = read_info(model).validation_metrics
    assert stamped["folds"]["mean"]["roc_auc"] is not None and len(stamped["folds"]["per_fold"]) == 2


# Logit units. Each map cell sums 2,560 features times their slopes, and PyTorch and onnxruntime add them
# in different orders (and with different thread counts from test to test): measured up to 0.0018 on maps
# whose cells reach +-2.5, i.e. float32 noise of about 1e-3 relative, where the scores agree to 1e-4.
ENSEMBLE_MAP_PARITY_TOLERANCE = 0.005
MAP_MEAN_TOLERANCE = 0.25  # logit units: bilinear resizing of a 9 x 9 map onto 12 x 12 moves its mean a little


@pytest.mark.parametrize("heads", ["mlp", "linear"])
def test_the_ensemble_recipe_trains_exports_and_serves_its_heads(tiny_manifest, tmp_path, heads):
    """Frozen Lite0 (at 384 px) and Lite2 (shrunk to 260 inside the graph) with either kind of heads: the exported file gives the scores of the fitted heads
    written out by hand, its map's spatial mean is the logit (to within resizing the backbones' maps to one
    grid), and PyTorch and onnxruntime agree."""
    from flexguard.training.ensemble import features

    run = tmp_path / "ensemble"
    assert cli_main(["train", str(tiny_manifest), "--recipe", "ensemble", "--heads", heads, "--out", str(run),
                     "--cache-dir", str(tmp_path / "cache"), "--workers", "1"]) == 0
    model = run / "flexguard.onnx"
    assert cli_main(["export", "--checkpoint", str(run / "checkpoint.pt"), "--out", str(model)]) == 0
    net, checkpoint = load_checkpoint(run / "checkpoint.pt")
    engine = Engine(model)
    photos = sorted(tiny_manifest.parent.glob("*/*.jpg"))[:4]
    batch = np.stack([engine.prepare(p).tensor for p in photos])
    with torch.no_grad():
        torch_scores, torch_cams = (t.numpy() for t in net(torch.from_numpy(batch)))
    onnx_scores, onnx_cams = engine.run(batch)
    assert np.abs(torch_scores - onnx_scores).max() <= PARITY_TOLERANCE
    assert np.abs(torch_cams - onnx_cams).max() <= ENSEMBLE_MAP_PARITY_TOLERANCE
    logits = np.log(onnx_scores / (1 - onnx_scores))
    assert np.abs(onnx_cams.mean(axis=(2, 3)) - logits).max() <= MAP_MEAN_TOLERANCE
    # The same as the heads on the cached pooled features (the training side's view of the photos).
    pooled = torch.from_numpy(features(photos, engine.info.preprocess, tmp_path / "cache", workers=1))
    fitted = checkpoint["heads"]
    if heads == "mlp":
        # The first layer's weights are stored once: the scores and the evidence maps share them.
        first_layer_size = fitted["w1"].numel()
        stored = [t for t in onnx.load(str(model)).graph.initializer if int(np.prod(t.dims)) == first_layer_size]
        assert len(stored) == 1
        hidden = torch.nn.functional.gelu(pooled @ fitted["w1"].T + fitted["b1"])
        expected = torch.sigmoid(hidden @ fitted["w2"].T + fitted["b2"])
    else:
        expected = torch.sigmoid(pooled @ fitted["weight"].T + fitted["bias"])
    assert np.abs(expected.numpy() - onnx_scores).max() <= PARITY_TOLERANCE * 10


def test_the_two_layer_heads_evidence_uses_their_exact_gradient():
    """The maps of the two-layer heads weigh each feature by d logit / d pooled feature: the written-out
    GELU slope must agree with autograd's, at large and small hidden values alike."""
    from flexguard.training.ensemble import EnsembleNet

    generator = torch.Generator().manual_seed(0)
    features_in, hidden, categories = 24, 16, len(CATEGORY_IDS)
    heads = {"w1": torch.randn(hidden, features_in, generator=generator), "b1": torch.randn(hidden, generator=generator),
             "w2": torch.randn(categories, hidden, generator=generator), "b2": torch.randn(categories, generator=generator)}
    net = EnsembleNet({}, {}, heads)
    pooled = 2 * torch.randn(3, features_in, generator=generator, dtype=torch.float32)
    _, slopes = net._logits_and_slopes(pooled)
    for photo in range(len(pooled)):
        jacobian = torch.autograd.functional.jacobian(lambda x: net._logits_and_slopes(x[None])[0][0], pooled[photo])
        assert torch.allclose(slopes[photo], jacobian, atol=1e-4)


def test_heads_fitted_on_standardised_features_score_raw_ones():
    """Both kinds of heads fold the standardisation into their weights: on features with large offsets and
    scales, the returned heads must score the raw features as well as the fit separated them."""
    from sklearn.metrics import roc_auc_score

    from flexguard.training.ensemble import fit_linear_heads, fit_mlp_heads, head_scores

    rng = np.random.default_rng(0)
    photos, features_in = 400, 32
    labels = (rng.random((photos, len(CATEGORY_IDS))) < 0.3).astype(np.float32)
    signal = np.zeros((photos, features_in))
    signal[:, :len(CATEGORY_IDS)] = 2 * labels
    raw = (signal + rng.normal(size=(photos, features_in))) * rng.uniform(10, 100, features_in) + rng.uniform(-500, 500, features_in)
    for heads in (fit_linear_heads(raw, labels, C=0.01), fit_mlp_heads(raw, labels, seed=0)):
        scores = head_scores(raw, heads)
        assert min(roc_auc_score(labels[:, k], scores[:, k]) for k in range(len(CATEGORY_IDS))) > 0.9


def test_seed_averaged_heads_are_one_wider_network_whose_logits_are_the_mean_of_each_seeds():
    """--head-seeds N fits N heads from successive seeds and writes them as one layer N times as wide:
    its logits must be exactly the mean of the N heads' own logits, in the graph the export runs."""
    from flexguard.training.ensemble import MLP_HIDDEN, fit_mlp_heads, head_scores

    rng = np.random.default_rng(1)
    photos, features_in = 300, 24
    labels = (rng.random((photos, len(CATEGORY_IDS))) < 0.3).astype(np.float32)
    raw = rng.normal(size=(photos, features_in)) * 50 + labels @ rng.normal(size=(len(CATEGORY_IDS), features_in)) * 40
    averaged = fit_mlp_heads(raw, labels, seed=3, seeds=3)
    assert averaged["w1"].shape == (3 * MLP_HIDDEN, features_in) and averaged["w2"].shape == (len(CATEGORY_IDS), 3 * MLP_HIDDEN)
    singles = [fit_mlp_heads(raw, labels, seed=seed) for seed in (3, 4, 5)]

    def logit(p):
        return np.log(p) - np.log1p(-p)

    expected = np.mean([logit(head_scores(raw, heads).astype(np.float64)) for heads in singles], axis=0)
    np.testing.assert_allclose(logit(head_scores(raw, averaged).astype(np.float64)), expected, atol=2e-3)
    # The seeds differ, so the average is not any one of them.
    assert np.abs(logit(head_scores(raw, singles[0]).astype(np.float64)) - expected).max() > 0.01
