"""The command line end to end on tiny synthetic scans: exit codes, files, geometry, errors."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from fewshotseg import cli
from fewshotseg.cli import _commands, _common
from fewshotseg.io import load_label_map, load_volume, save_volume
from fewshotseg.training import TrainConfig, load_checkpoint

TINY = ["--backbone", "tiny", "--feature-dim", "8", "--image-size", "32", "--min-foreground", "10"]


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: one torch thread


def _scan(seed: int, shift: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A (D, H, W) = (6, 40, 36) 'body' with two organs on slices 1..4, and its labels."""
    rng = np.random.default_rng(seed)
    d, h, w = 6, 40, 36
    yy, xx = np.mgrid[:h, :w]
    img = np.full((d, h, w), 10.0)
    img[:, (yy - 20) ** 2 + (xx - 18) ** 2 < 16**2] = 200.0
    lab = np.zeros((d, h, w), np.uint8)
    organ1 = (yy - 16 - shift) ** 2 + (xx - 13) ** 2 < 6**2
    organ2 = (yy - 26) ** 2 + (xx - 24) ** 2 < 4**2
    for z in range(1, 5):
        img[z, organ1], lab[z, organ1] = 500.0, 1
        img[z, organ2], lab[z, organ2] = 800.0, 2
    img += rng.normal(0, 5, img.shape)
    return np.clip(img, 0, None).astype(np.float32), lab


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("scans")
    affine = np.diag([1.5, 1.25, 5.0, 1.0])
    affine[:3, 3] = (-30.0, 12.0, 7.0)
    for i in (1, 2, 3):
        img, lab = _scan(i, shift=i - 2)
        # via nibabel directly, so the files carry a non-trivial affine
        import nibabel as nib

        to_file = np.moveaxis(img, 0, 2)  # (D, H, W) -> NIfTI (i, j, k) with axis 2 = D
        nib.save(nib.Nifti1Image(to_file, affine), folder / f"image_{i}.nii.gz")
        nib.save(nib.Nifti1Image(np.moveaxis(lab, 0, 2), affine), folder / f"label_{i}.nii.gz")
    return folder


@pytest.fixture(scope="module")
def checkpoint(data, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("run") / "ckpt"
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        code = cli.main(
            ["train", str(data / "image_*.nii.gz"), "--checkpoint-dir", str(out), "--iterations",
             "2", "--no-progress", "--quiet", *TINY]
        )  # fmt: skip
    finally:
        torch.set_num_threads(before)
    assert code == 0
    return out


def _error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("fewshotseg: error: ")
    return err[0]


# ---------------------------------------------------------------------------------- parser


@pytest.mark.parametrize("command", ["pseudolabel", "train", "predict", "evaluate", "demo"])
def test_every_command_has_help(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main([command, "--help"])
    assert exit_info.value.code == 0
    assert f"usage: fewshotseg {command}" in capsys.readouterr().out


def test_train_has_a_flag_for_every_train_config_field(capsys):
    with pytest.raises(SystemExit):
        cli.main(["train", "--help"])
    text = capsys.readouterr().out
    for field in dataclasses.fields(TrainConfig):
        assert "--" + field.name.replace("_", "-") in text, field.name


def test_train_flags_build_the_config():
    parser = cli.build_parser()
    args = parser.parse_args(["train", "x", "--lr", "0.02", "--amp", "--batch-size", "3",
                              "--checkpoint-dir", "d", "--no-progress"])  # fmt: skip
    config = _commands._train_config(args)
    assert (config.lr, config.amp, config.batch_size, config.progress) == (0.02, True, 3, False)
    assert config.checkpoint_dir == "d"
    assert config.iterations == TrainConfig.cpu_preset().iterations  # the default preset
    args = parser.parse_args(["train", "x", "--preset", "paper"])
    assert _commands._train_config(args) == TrainConfig()


@pytest.mark.parametrize(
    "flags, warned",
    [(["--batch-size", "8"], "--lr 0.008 (and --lr-step 125"),
     (["--batch-size", "8", "--lr", "0.01"], None), (["--batch-size", "4"], None),
     (["--preset", "paper", "--batch-size", "2"], "--lr 0.002 (and --lr-step 500"), ([], None)],
)  # fmt: skip
def test_train_says_how_to_scale_lr_when_only_the_batch_size_changes(caplog, flags, warned):
    args = cli.build_parser().parse_args(["train", "x", *flags])
    with caplog.at_level("WARNING"):
        config = _commands._train_config(args)
    if warned is None:
        assert "--batch-size" not in caplog.text
    else:
        assert warned in caplog.text
    preset = TrainConfig() if "paper" in flags else TrainConfig.cpu_preset()
    assert config.lr == (0.01 if "--lr" in flags else preset.lr)  # a hint, not a change


@pytest.mark.parametrize(
    "modality, flags, expected",
    [("mri", [], 0.5), ("ct", [], 0.0), ("none", [], 0.0), ("mri", ["--bias-field", "0"], 0.0),
     ("ct", ["--bias-field", "0.2"], 0.2)],
)  # fmt: skip
def test_train_augmentation_follows_the_modality(modality, flags, expected):
    args = cli.build_parser().parse_args(["train", "x", "--modality", modality, *flags])
    augment = _commands._augmentation(modality, args.bias_field)
    assert augment.bias_field == expected
    assert augment.rotation == 5.0 and augment.gamma == (0.5, 1.5)  # the reference otherwise


@pytest.mark.parametrize("command", ["predict", "evaluate", "demo"])
@pytest.mark.parametrize(
    "flags, amp",
    [([], False), (["--amp"], True), (["--amp", "auto"], "auto"), (["--amp", "off"], False),
     (["--amp", "--no-amp"], False)],
)  # fmt: skip
def test_inference_commands_take_amp_like_train(command, flags, amp):
    positional = {"predict": ["s", "l", "q"], "evaluate": [], "demo": []}[command]
    args = cli.build_parser().parse_args([command, *positional, *flags])
    assert args.amp == amp and type(args.amp) is type(amp)


def test_amp_reaches_the_predictor(checkpoint, monkeypatch):
    from fewshotseg import precision

    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: True)
    parser = cli.build_parser()
    for flags, amp in [(["--amp"], True), (["--amp", "auto"], "auto"), ([], False)]:
        args = parser.parse_args(["evaluate", "--checkpoint", str(checkpoint), "--device", "cpu",
                                  *flags])  # fmt: skip
        predictor, _ = _common._load_predictor(args)
        assert predictor.amp == amp
        conv = next(m for m in predictor.model.modules() if isinstance(m, torch.nn.Conv2d))
        seen = []
        hook = conv.register_forward_hook(lambda mod, inp, out, seen=seen: seen.append(out.dtype))
        predictor.encode_slices(np.zeros((1, 32, 32), np.float32))
        hook.remove()
        assert seen == [torch.bfloat16 if amp else torch.float32]


def test_bad_argument_is_one_line_and_status_2(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["train", "x", "--lr", "fast"])
    assert exit_info.value.code == 2
    assert "--lr" in _error_line(capsys)


@pytest.mark.parametrize(
    ("argv", "points_to"),
    [(["pseudolabel", "x.nii.gz", "--no-progress"], "fewshotseg pseudolabel --help"),
     (["demo", "--fold", "1", "--foo"], "fewshotseg demo --help"),
     (["--bogus"], "fewshotseg --help")],
)  # fmt: skip
def test_an_unknown_flag_points_to_its_commands_help(argv, points_to, capsys):
    """Not to 'fewshotseg --help', which does not list a subcommand's flags."""
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    assert exit_info.value.code == 2
    line = _error_line(capsys)
    assert f"unrecognized arguments: {argv[-1]}" in line and f"(see '{points_to}')" in line


def test_module_entry_point_and_version():
    out = subprocess.run(
        [sys.executable, "-m", "fewshotseg", "--version"], capture_output=True, text=True
    )
    assert out.returncode == 0 and out.stdout.startswith("fewshotseg ")


# ------------------------------------------------------------------------------ end to end


def test_pseudolabel_writes_files_next_to_scans(data, tmp_path, capsys):
    out_dir = tmp_path / "pseudo"
    assert cli.main(["pseudolabel", str(data / "image_*.nii.gz"), "--min-size", "30",
                     "--out-dir", str(out_dir), "--quiet"]) == 0  # fmt: skip
    files = sorted(out_dir.iterdir())
    assert [f.name for f in files] == [f"image_{i}.superpixels.nii.gz" for i in (1, 2, 3)]
    scan = load_volume(data / "image_1.nii.gz")
    labels = load_label_map(files[0])
    assert labels.shape == scan.shape and labels.max() >= 2
    # computed on the raw scan, with the given settings
    from fewshotseg.superpixels import SuperpixelPseudolabeler

    np.testing.assert_array_equal(labels, SuperpixelPseudolabeler(min_size=30)(scan.array))
    # a second run keeps the files; --overwrite recomputes
    capsys.readouterr()
    assert cli.main(["pseudolabel", str(data / "image_1.nii.gz"), "--out-dir", str(out_dir),
                     "--quiet"]) == 0  # fmt: skip
    assert "kept" in capsys.readouterr().out


def test_pseudolabel_reports_the_body_coverage_of_each_scan(data, tmp_path, capsys):
    noise = np.random.default_rng(0).normal(100, 30, (3, 24, 24)).astype(np.float32)
    save_volume(noise, tmp_path / "noise.nii.gz")
    assert cli.main(["pseudolabel", str(data / "image_1.nii.gz"), str(tmp_path / "noise.nii.gz"),
                     "--out-dir", str(tmp_path / "out"), "--quiet"]) == 0  # fmt: skip
    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    assert lines[1].startswith("  image_1.nii.gz: body ") and "superpixels per slice" in lines[1]
    assert lines[3].startswith("  noise.nii.gz: body 0.0 % of the view")
    assert captured.err.strip().splitlines() == [
        "warning: noise.nii.gz (3, 24, 24): the body mask covers 0.0 % of the field of view (no "
        "body found?); check the modality (MRI or CT), or pass body_threshold= in the scan's "
        "units (fewshotseg pseudolabel --body-threshold)"
    ]


def test_train_writes_a_resumable_checkpoint(data, checkpoint, tmp_path):
    ckpt = load_checkpoint(checkpoint / "last.pt")
    assert ckpt["step"] == 2 and ckpt["image_size"] == 32 and ckpt["modality"] == "mri"
    assert ckpt["model_config"]["backbone"] == "tiny"
    resumed = tmp_path / "resumed"
    resumed.mkdir()
    (resumed / "last.pt").write_bytes((checkpoint / "last.pt").read_bytes())
    assert cli.main(["train", str(data / "image_1.nii.gz"), "--checkpoint-dir", str(resumed),
                     "--iterations", "3", "--no-progress", "--quiet",
                     "--min-foreground", "10"]) == 0  # fmt: skip
    assert load_checkpoint(resumed / "last.pt")["step"] == 3


def test_train_setting2_excludes_slices(data, tmp_path):
    # class 1 is on slices 1..4 of every scan: only slices 0 and 5 remain, and they hold
    # superpixels, so training still runs
    out = tmp_path / "s2"
    args = ["train", str(data / "image_*.nii.gz"), "--checkpoint-dir", str(out),
            "--iterations", "1", "--no-progress", "--quiet", "--exclude-classes", "1",
            "--exclude-labels", str(data / "label_*.nii.gz"), *TINY]  # fmt: skip
    assert cli.main(args) == 0
    assert (out / "last.pt").is_file()


def test_predict_writes_labels_with_the_query_geometry(data, checkpoint, tmp_path, monkeypatch):
    """The file is the query's grid (shape, affine, spacing) and holds the predictor's labels
    voxel for voxel: no flip, transpose, shift or crop on the way from the network to disk."""
    from fewshotseg.inference import SupportQueryPredictor

    out, png = tmp_path / "pred.nii.gz", tmp_path / "pred.png"
    assert cli.main(["predict", str(data / "image_1.nii.gz"), str(data / "label_1.nii.gz"),
                     str(data / "image_2.nii.gz"), "--checkpoint", str(checkpoint),
                     "-o", str(out), "--overlay", str(png), "--quiet"]) == 0  # fmt: skip
    support, query, pred = (load_volume(data / "image_1.nii.gz"),
                            load_volume(data / "image_2.nii.gz"), load_volume(out))  # fmt: skip
    assert pred.shape == query.shape
    np.testing.assert_allclose(pred.affine, query.affine)
    np.testing.assert_allclose(pred.spacing, query.spacing)
    assert png.stat().st_size > 0
    # the same call in memory, on the raw volumes (the predictor applies its recipe itself)
    predictor = SupportQueryPredictor.from_checkpoint(checkpoint / "last.pt", device="cpu")
    expected = predictor.segment_volume(
        support.array, load_label_map(data / "label_1.nii.gz"), query.array, classes=[1, 2]
    )
    np.testing.assert_array_equal(pred.array, expected)
    # an asymmetric answer (the query's own labels) lands on the voxels it was given for
    truth = load_label_map(data / "label_2.nii.gz")
    assert not np.array_equal(truth, truth[:, ::-1]) and not np.array_equal(truth, truth[..., ::-1])

    def oracle(self, support_volume, support_labels, query_volume, *, classes=None):
        assert query_volume.shape == truth.shape
        return truth

    monkeypatch.setattr(SupportQueryPredictor, "segment_volume", oracle)
    assert cli.main(["predict", str(data / "image_1.nii.gz"), str(data / "label_1.nii.gz"),
                     str(data / "image_2.nii.gz"), "--checkpoint", str(checkpoint),
                     "-o", str(out), "--quiet"]) == 0  # fmt: skip
    np.testing.assert_array_equal(load_label_map(out), truth)


def test_predict_with_chosen_support_slices(data, checkpoint, tmp_path, monkeypatch):
    """--support-slices 2 3 --classes 2: one predict call whose shots are exactly slices 2 and 3
    of the support (intensity recipe applied) with class 2 only, on the whole query; its answer
    is the file."""
    from fewshotseg.inference import SupportQueryPredictor
    from fewshotseg.preprocess import apply_recipe

    calls = []
    predict = SupportQueryPredictor.predict

    def spy(self, support_img, support_mask, query):
        calls.append((np.asarray(support_img), np.asarray(support_mask), np.asarray(query)))
        return predict(self, support_img, support_mask, query)

    monkeypatch.setattr(SupportQueryPredictor, "predict", spy)
    monkeypatch.setattr(SupportQueryPredictor, "segment_volume", None)  # must not be used
    out = tmp_path / "pred.npz"
    assert cli.main(["predict", str(data / "image_1.nii.gz"), str(data / "label_1.nii.gz"),
                     str(data / "image_3.nii.gz"), "--checkpoint", str(checkpoint / "last.pt"),
                     "-o", str(out), "--support-slices", "2", "3", "--classes", "2",
                     "--quiet"]) == 0  # fmt: skip
    support, query = load_volume(data / "image_1.nii.gz"), load_volume(data / "image_3.nii.gz")
    labels = load_label_map(data / "label_1.nii.gz")
    [(s_img, s_mask, q_img)] = calls
    np.testing.assert_allclose(s_img, apply_recipe(support.array, "mri")[[2, 3]])
    np.testing.assert_array_equal(s_mask, np.where(labels[[2, 3]] == 2, 2, 0))
    assert (s_mask == 2).any() and not (s_mask == 1).any()
    np.testing.assert_allclose(q_img, apply_recipe(query.array, "mri"))
    pred = load_label_map(out)
    assert pred.shape == (6, 40, 36) and set(np.unique(pred)) <= {0, 2}
    predictor = SupportQueryPredictor.from_checkpoint(checkpoint / "last.pt", device="cpu")
    np.testing.assert_array_equal(pred, predict(predictor, s_img, s_mask, q_img))


def test_predict_with_several_support_scans(data, checkpoint, tmp_path, capsys):
    """--add-support SCAN LABEL: the file is segment_volume's answer with both supports, and
    a second support that lacks a chosen class, or --support-slices beside it, is refused."""
    from fewshotseg.inference import SupportQueryPredictor

    out = tmp_path / "pred.nii.gz"
    files = [str(data / f) for f in ("image_1.nii.gz", "label_1.nii.gz", "image_2.nii.gz")]
    extra = ["--add-support", str(data / "image_3.nii.gz"), str(data / "label_3.nii.gz")]
    assert cli.main(["predict", *files, *extra, "--checkpoint", str(checkpoint), "-o", str(out),
                     "--quiet"]) == 0  # fmt: skip
    predictor = SupportQueryPredictor.from_checkpoint(checkpoint / "last.pt", device="cpu")
    scans = [load_volume(data / f"image_{i}.nii.gz").array for i in (1, 3)]
    labels = [load_label_map(data / f"label_{i}.nii.gz") for i in (1, 3)]
    query = load_volume(data / "image_2.nii.gz").array
    expected = predictor.segment_volume(scans, labels, query, classes=[1, 2])
    np.testing.assert_array_equal(load_label_map(out), expected)
    assert not np.array_equal(expected, predictor.segment_volume(scans[0], labels[0], query))

    empty = tmp_path / "label_empty.nii.gz"
    save_volume(np.where(labels[1] == 2, 0, labels[1]).astype(np.uint8), empty,
                like=load_volume(data / "label_3.nii.gz"))  # fmt: skip
    assert cli.main(["predict", *files, "--add-support", str(data / "image_3.nii.gz"),
                     str(empty), "--checkpoint", str(checkpoint), "--quiet"]) == 1  # fmt: skip
    assert f"{str(empty)!r} has no voxel of class(es) [2]" in _error_line(capsys)
    assert cli.main(["predict", *files, *extra, "--support-slices", "2", "--checkpoint",
                     str(checkpoint), "--quiet"]) == 1  # fmt: skip
    assert "drop --add-support" in _error_line(capsys)


def test_evaluate_prints_and_saves_a_table(data, checkpoint, tmp_path, capsys):
    out = tmp_path / "dice.csv"
    assert cli.main(["evaluate", "--checkpoint", str(checkpoint), "--images",
                     str(data / "image_*.nii.gz"), "--labels", str(data / "label_*.nii.gz"),
                     "--out", str(out), "--quiet"]) == 0  # fmt: skip
    assert "mean Dice" in capsys.readouterr().out
    from fewshotseg.evaluation import ResultTable

    table = ResultTable.load(out)
    assert len(table) == 4  # 2 queries x 2 classes; the first scan is the support
    assert {r.support for r in table} == {"image_1.nii.gz"}
    assert all(0.0 <= r.dice <= 1.0 for r in table)


def test_evaluate_with_several_supports_scores_them_together(data, checkpoint, tmp_path,
                                                              capsys):
    out = tmp_path / "dice.json"
    images = [str(data / f"image_{i}.nii.gz") for i in (1, 2, 3)]
    labels = [str(data / f"label_{i}.nii.gz") for i in (1, 2, 3)]
    assert cli.main(["evaluate", "--checkpoint", str(checkpoint), "--images", *images,
                     "--labels", *labels, "--supports", "2", "--protocol", "realistic",
                     "--out", str(out), "--quiet"]) == 0  # fmt: skip
    assert "supports image_1.nii.gz, image_2.nii.gz, queries image_3.nii.gz" in (
        capsys.readouterr().out)
    from fewshotseg import SupportQueryPredictor
    from fewshotseg.evaluation import ResultTable, evaluate_pair

    table = ResultTable.load(out)
    assert {r.support for r in table} == {"image_1.nii.gz+image_2.nii.gz"}
    assert {r.scan for r in table} == {"image_3.nii.gz"}
    predictor = SupportQueryPredictor.from_checkpoint(checkpoint / "last.pt", device="cpu")
    vols = [load_volume(f).array for f in images]
    labs = [load_label_map(f) for f in labels]
    expected = evaluate_pair(predictor, vols[:2], labs[:2], vols[2], labs[2],
                             [r.class_id for r in table], protocol="realistic")
    assert [r.dice for r in table] == [r.dice for r in expected]
    for extra, says in ((["--supports", "2"], "--protocol realistic"),
                        (["--supports", "3", "--protocol", "realistic"], "at least 4"),
                        (["--supports", "0"], "--supports 0")):  # fmt: skip
        assert cli.main(["evaluate", "--checkpoint", str(checkpoint), "--images", *images,
                         "--labels", *labels, *extra, "--quiet"]) == 1  # fmt: skip
        assert says in _error_line(capsys)
    assert cli.main(["evaluate", "--checkpoint", str(checkpoint), "--data", str(data),
                     "--folds", "3", "--supports", "2", "--protocol", "realistic",
                     "--quiet"]) == 1  # fmt: skip
    assert "at most 1" in _error_line(capsys)


# ---------------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "argv, says",
    [
        (["pseudolabel", "{tmp}/missing.nii.gz"], "scan not found: '{tmp}/missing.nii.gz'"),
        (["pseudolabel", "{tmp}/nothing_*.nii.gz"], "no scan file matches '{tmp}/nothing_*"),
        (["train", "{tmp}/missing.nii.gz", "--checkpoint-dir", "{tmp}/c"],
         "scan not found: '{tmp}/missing.nii.gz'"),
        (["predict", "{tmp}/a.nii.gz", "{tmp}/b.nii.gz", "{tmp}/c.nii.gz", "--checkpoint", "x"],
         "scan not found: '{tmp}/a.nii.gz'"),
        (["evaluate", "--checkpoint", "{tmp}/missing.pt", "--images", "{data}/image_*.nii.gz",
          "--labels", "{data}/label_*.nii.gz"], "checkpoint not found: '{tmp}/missing.pt'"),
        (["evaluate", "--checkpoint", "{tmp}", "--data", "{tmp}/nowhere"],
         "no such folder: '{tmp}/nowhere'"),
        (["demo", "--checkpoint", "{tmp}/missing.pt"], "checkpoint not found: '{tmp}/missing.pt'"),
    ],
)  # fmt: skip
def test_bad_paths_give_one_clear_line(argv, says, data, tmp_path, capsys):
    """Each bad path gives its own error, naming what is missing and where."""
    argv = [a.format(tmp=tmp_path, data=data) for a in argv]
    assert cli.main([*argv, "--quiet"]) == 1
    line = _error_line(capsys)
    assert says.format(tmp=tmp_path, data=data) in line
    assert "Traceback" not in line


def test_debug_shows_the_traceback(tmp_path):
    with pytest.raises(cli.CLIError):
        cli.main(["pseudolabel", str(tmp_path / "missing.nii.gz"), "--debug"])


def test_mismatched_pseudolabels_are_an_error(data, tmp_path, capsys):
    save_volume(np.zeros((2, 3, 4), np.int32), tmp_path / "p.npz")
    assert cli.main(["train", str(data / "image_1.nii.gz"), "--pseudolabels",
                     str(tmp_path / "p.npz"), "--checkpoint-dir", str(tmp_path / "c"),
                     "--quiet"]) == 1  # fmt: skip
    assert "shape" in _error_line(capsys)


def test_predict_needs_a_model(data, capsys):
    assert cli.main(["predict", str(data / "image_1.nii.gz"), str(data / "label_1.nii.gz"),
                     str(data / "image_2.nii.gz"), "--quiet"]) == 1  # fmt: skip
    assert "--checkpoint" in _error_line(capsys)


# ------------------------------------------------------------------------- console polish


def test_help_explains_every_evaluate_and_demo_option():
    parser = cli.build_parser()
    for command, flags in (("evaluate", ("--protocol", "--setting", "--group")),
                           ("demo", ("--fold", "--protocol"))):  # fmt: skip
        sub = parser._subparsers._group_actions[0].choices[command]  # noqa: SLF001
        helps = {o: a.help for a in sub._actions for o in a.option_strings}  # noqa: SLF001
        for flag in flags:
            assert helps[flag] and helps[flag] != "==SUPPRESS==", (command, flag)


def test_ctrl_c_during_training_is_one_line_with_the_checkpoint(monkeypatch, tmp_path, capsys):
    import signal

    from fewshotseg.training import TrainingInterrupted

    def stopped(args):
        raise TrainingInterrupted(signal.SIGINT, 7)

    monkeypatch.setattr(_commands, "cmd_train", stopped)
    code = cli.main(["train", "x.nii.gz", "--checkpoint-dir", str(tmp_path / "run"), "--quiet"])
    assert code == 128 + signal.SIGINT
    [line] = capsys.readouterr().err.strip().splitlines()
    assert "step 7" in line and str(tmp_path / "run" / "last.pt") in line and "resume" in line


def test_library_warnings_are_single_log_lines(monkeypatch, capsys):
    import warnings

    def warns(args):
        warnings.warn("1 of the 4 slices of image_7.nii.gz is blank", UserWarning, stacklevel=1)
        return 0

    monkeypatch.setattr(_commands, "cmd_pseudolabel", warns)
    assert cli.main(["pseudolabel", "x.nii.gz"]) == 0
    err = capsys.readouterr().err
    assert err.strip().splitlines() == ["warning: 1 of the 4 slices of image_7.nii.gz is blank"]
    assert warnings.showwarning is not cli._log_warning  # restored afterwards


def test_log_lines_do_not_run_into_a_progress_bar(capsys):
    import logging
    import sys

    from tqdm import tqdm

    handler = cli._StderrHandler()
    handler.setFormatter(logging.Formatter("%(message)s"))
    with tqdm(total=3, file=sys.stderr, desc="steps", ascii=True) as bar:
        bar.update(1)
        handler.emit(logging.LogRecord("x", logging.INFO, "", 0, "step 1: loss 0.5", None, None))
        bar.update(1)
    err = capsys.readouterr().err
    pieces = [p.strip() for p in err.replace("\r", "\n").split("\n")]
    assert "step 1: loss 0.5" in pieces  # a line of its own, not appended to the bar


# ------------------------------------------------------------------ folds for train/pseudolabel


@pytest.fixture
def chaos_like(tmp_path) -> Path:
    """Empty files named like the 20 CHAOS T2-SPIR scans (only the names are read)."""
    from fewshotseg.evaluation import CHAOS_PATIENT_IDS

    for i in CHAOS_PATIENT_IDS:
        (tmp_path / f"image_{i}.nii.gz").touch()
    return tmp_path


def _split(out: str) -> dict[str, list[str]]:
    rows = [line.strip().split(": ", 1) for line in out.splitlines()[1:]]
    return {k.split(" (")[0]: v.split(", ") for k, v in rows}


@pytest.mark.parametrize("command", ["train", "pseudolabel"])
@pytest.mark.parametrize("k", [0, 3])
def test_fold_split_is_evaluates(command, k, chaos_like, capsys):
    from fewshotseg.evaluation import CHAOS_PATIENT_IDS, cross_validation_folds

    fold = cross_validation_folds(CHAOS_PATIENT_IDS)[k]
    code = cli.main([command, str(chaos_like / "image_*.nii.gz"), "--fold", str(k),
                     "--show-split"])  # fmt: skip
    assert code == 0
    split = _split(capsys.readouterr().out)
    assert split["train"] == [f"image_{i}.nii.gz" for i in fold.train]
    assert split["support"] == [f"image_{fold.support}.nii.gz"]
    assert split["queries"] == [f"image_{i}.nii.gz" for i in fold.test]


def test_exclude_by_id_or_name_and_unknown_ids(chaos_like, capsys):
    assert cli.main(["train", str(chaos_like / "image_*.nii.gz"), "--exclude", "1",
                     "image_2.nii.gz", "--show-split"]) == 0  # fmt: skip
    split = _split(capsys.readouterr().out)
    assert split["excluded"] == ["image_1.nii.gz", "image_2.nii.gz"]
    assert len(split["train"]) == 18 and "image_1.nii.gz" not in split["train"]
    assert cli.main(["train", str(chaos_like / "image_*.nii.gz"), "--exclude", "99",
                     "--show-split"]) == 1  # fmt: skip
    assert "--exclude 99" in _error_line(capsys)
    assert cli.main(["train", str(chaos_like / "image_*.nii.gz"), "--fold", "5",
                     "--show-split"]) == 1  # fmt: skip
    assert "0..4" in _error_line(capsys)


def test_train_on_a_fold_reads_only_its_training_scans(data, tmp_path, monkeypatch):
    read = []
    load = _commands._load_scan
    monkeypatch.setattr(_commands, "_load_scan", lambda path, axis: read.append(path.name)
                        or load(path, axis))  # fmt: skip
    code = cli.main(["train", str(data / "image_*.nii.gz"), "--fold", "0", "--folds", "3",
                     "--checkpoint-dir", str(tmp_path / "ckpt"), "--iterations", "1",
                     "--no-progress", "--quiet", *TINY])  # fmt: skip
    assert code == 0
    # three scans in three folds: fold 0 tests scan 1 with support 2, so it trains on 3 only
    assert read == ["image_3.nii.gz"]


# ------------------------------------------------------------------- modality mismatches


def _model_args(checkpoint, **kw):
    import argparse

    base = {"device": "cpu", "image_size": None, "checkpoint": str(checkpoint),
            "pretrained": None, "modality": None, "amp": False}  # fmt: skip
    return argparse.Namespace(**{**base, **kw})


def test_modality_unlike_the_checkpoints_warns(checkpoint):
    assert load_checkpoint(checkpoint / "last.pt")["modality"] == "mri"
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _common._load_predictor(_model_args(checkpoint))  # the checkpoint's own recipe: silent
        _common._load_predictor(_model_args(checkpoint, dataset="chaos_t2spir"))
    with pytest.warns(UserWarning, match="trained with the mri"):
        _, modality = _common._load_predictor(_model_args(checkpoint, modality="ct"))
    assert modality == "ct"  # the user's choice stands
    with pytest.warns(UserWarning, match="--dataset synapse_ct is CT"):
        _common._load_predictor(_model_args(checkpoint, dataset="synapse_ct"))


# ----------------------------------------------------------------------- predict's overlay


def test_overlay_names_classes_and_shows_slices_over_the_segmented_extent(
    data, checkpoint, tmp_path, capsys, monkeypatch
):
    from matplotlib.text import Text

    import fewshotseg.viz as viz

    drawn = {}
    draw = viz.overlay_slices

    def spy(image, labels, zs, **kw):
        drawn.update(zs=zs, classes=kw["classes"], labels=np.asarray(labels))
        drawn["fig"] = draw(image, labels, zs, **kw)
        return drawn["fig"]

    monkeypatch.setattr(viz, "overlay_slices", spy)
    png = tmp_path / "o.png"
    assert cli.main(["predict", str(data / "image_1.nii.gz"), str(data / "label_1.nii.gz"),
                     str(data / "image_2.nii.gz"), "--checkpoint", str(checkpoint),
                     "-o", str(tmp_path / "p.nii.gz"), "--overlay", str(png),
                     "--dataset", "chaos_t2spir", "--class-names", "2=kidney",
                     "--quiet"]) == 0  # fmt: skip
    assert png.stat().st_size > 1000
    assert drawn["classes"] == {1: "liver", 2: "kidney"}  # the dataset's, then the user's
    prediction = load_label_map(tmp_path / "p.nii.gz")
    np.testing.assert_array_equal(drawn["labels"], prediction)
    # the slices come from each class's extent in the prediction (the support-matched range),
    # not from the busiest slice
    assert drawn["zs"] == viz.extent_slices(prediction, 4)
    filled = np.flatnonzero(prediction.any(axis=(1, 2)))
    if filled.size:  # every slice shown lies inside the segmented extent
        assert all(filled[0] <= z <= filled[-1] for z in drawn["zs"])
    texts = [t.get_text() for t in drawn["fig"].findobj(Text)]
    assert not any(t.startswith("class ") for t in texts)  # names are known: no "class N"
    shown = {int(v) for z in drawn["zs"] for v in np.unique(prediction[z])} - {0}
    assert {drawn["classes"][c] for c in shown} <= set(texts)
    assert any(t.startswith("image_2.nii.gz: prediction from image_1.nii.gz") for t in texts)
    out = capsys.readouterr().out
    assert f"slices {', '.join(map(str, drawn['zs']))};" in out
    for c, (lo, hi) in viz.slice_extents(prediction).items():
        assert f"{drawn['classes'][c]} in {lo}-{hi}" in out


def test_overlay_picks_slices_from_each_class_extent_and_says_what_was_not_found(
    data, checkpoint, tmp_path, capsys, monkeypatch
):
    """A stand-in prediction with hand-made extents: class 1 on slices 0..1, class 2 absent.
    The overlay shows class 1's slices only and says class 2 (spleen) was not found."""
    import fewshotseg.viz as viz
    from fewshotseg.inference import SupportQueryPredictor

    def stand_in(self, support_volume, support_labels, query_volume, *, classes=None):
        out = np.zeros(query_volume.shape, np.int64)
        out[0:2, 5:10, 5:10] = 1
        return out

    monkeypatch.setattr(SupportQueryPredictor, "segment_volume", stand_in)
    drawn = {}
    draw = viz.overlay_slices
    monkeypatch.setattr(viz, "overlay_slices",
                        lambda *a, **kw: drawn.setdefault("fig", draw(*a, **kw)))  # fmt: skip
    png = tmp_path / "o.png"
    assert cli.main(["predict", str(data / "image_1.nii.gz"), str(data / "label_1.nii.gz"),
                     str(data / "image_2.nii.gz"), "--checkpoint", str(checkpoint),
                     "-o", str(tmp_path / "p.nii.gz"), "--overlay", str(png),
                     "--class-names", "1=liver", "2=spleen", "--quiet"]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert "slices 0, 1; segmented: liver in 0-1)" in out
    assert [ax.get_title() for ax in drawn["fig"].axes] == ["slice 0", "slice 1"]
    assert drawn["fig"]._suptitle.get_text().endswith("(nothing found: spleen)")


def test_spread_slices_cover_the_extent_evenly():
    from fewshotseg.viz import spread_slices

    labels = np.zeros((30, 2, 2), int)
    labels[10:21, 0, 0] = 1
    assert spread_slices(labels, 3) == [12, 15, 18]
    assert spread_slices(np.zeros((5, 2, 2), int), 3) == [1, 2, 3]  # nothing: the whole volume


def test_bad_class_names_are_one_line(data, checkpoint, tmp_path, capsys):
    assert cli.main(["predict", str(data / "image_1.nii.gz"), str(data / "label_1.nii.gz"),
                     str(data / "image_2.nii.gz"), "--checkpoint", str(checkpoint),
                     "-o", str(tmp_path / "p.nii.gz"), "--overlay", str(tmp_path / "o.png"),
                     "--class-names", "liver", "--quiet"]) == 1  # fmt: skip
    assert "VALUE=NAME" in _error_line(capsys)


def test_train_leaves_metrics_and_a_curve_in_the_run_folder(checkpoint):
    # the module's checkpoint fixture trained 2 steps; log_every is 100, so the last step logged
    rows = (checkpoint / "metrics.csv").read_text().strip().splitlines()
    assert rows[0].startswith("step,loss,seg_loss,align_loss,lr,episodes_per_s")
    assert [r.split(",")[0] for r in rows[1:]] == ["2"]
    assert (checkpoint / "metrics.png").stat().st_size > 5000


def test_predict_and_evaluate_average_the_models_of_several_checkpoints(data, checkpoint,
                                                                        tmp_path, capsys):
    """Two --checkpoint: the label file is the ensemble's (PredictorEnsemble) and the table
    scores that ensemble."""
    from fewshotseg.ensemble import PredictorEnsemble
    from fewshotseg.evaluation import ResultTable
    from fewshotseg.inference import SupportQueryPredictor

    other = tmp_path / "other"
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert cli.main(["train", str(data / "image_*.nii.gz"), "--checkpoint-dir", str(other),
                         "--iterations", "2", "--seed", "7", "--no-progress", "--quiet",
                         *TINY]) == 0  # fmt: skip
    finally:
        torch.set_num_threads(before)
    out = tmp_path / "pred.nii.gz"
    both = ["--checkpoint", str(checkpoint), "--checkpoint", str(other)]
    assert cli.main(["predict", str(data / "image_1.nii.gz"), str(data / "label_1.nii.gz"),
                     str(data / "image_2.nii.gz"), *both, "-o", str(out),
                     "--quiet"]) == 0  # fmt: skip
    members = [SupportQueryPredictor.from_checkpoint(c / "last.pt", device="cpu")
               for c in (checkpoint, other)]  # fmt: skip
    support, query = load_volume(data / "image_1.nii.gz"), load_volume(data / "image_2.nii.gz")
    labels = load_label_map(data / "label_1.nii.gz")
    expected = PredictorEnsemble(members).segment_volume(support.array, labels, query.array)
    alone = [m.segment_volume(support.array, labels, query.array) for m in members]
    assert not all(np.array_equal(expected, a) for a in alone)  # the two models differ
    np.testing.assert_array_equal(load_label_map(out), expected)

    tables = []
    for models in (both, ["--checkpoint", str(checkpoint)]):
        dest = tmp_path / f"dice{len(models)}.json"
        assert cli.main(["evaluate", *models, "--images", str(data / "image_*.nii.gz"),
                         "--labels", str(data / "label_*.nii.gz"), "--out", str(dest),
                         "--quiet"]) == 0  # fmt: skip
        tables.append(ResultTable.load(dest))
    assert len(tables[0]) == len(tables[1]) == 4
    assert [r.dice for r in tables[0]] != [r.dice for r in tables[1]]
