"""Mixed precision: bf16 detection, the dtype per device, and bf16 training on the CPU.

bf16 autocast runs on any CPU (emulated where the processor lacks bf16, only slower), so the
training tests force it on with ``cpu_has_native_bf16`` patched to True and run everywhere; the
tiny model keeps the slow path cheap. The check against fp32 on a real CHAOS slice with the
shipped model is in tests/test_inference.py.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fewshotseg import precision
from fewshotseg.episodes import collate_episodes
from fewshotseg.training import TrainConfig, Trainer, episode_loss
from tests.test_training import make_sampler, tiny_model

X86_BF16 = """processor\t: 0
vendor_id\t: GenuineIntel
flags\t\t: fpu vme sse sse2 avx2 avx512f avx512_bf16 amx_tile amx_bf16
vmx flags\t: vnmi preemption_timer
bugs\t\t: spectre_v1
"""
X86_AVX2 = """processor\t: 0
vendor_id\t: AuthenticAMD
flags\t\t: fpu vme sse sse2 avx avx2 fma avx512f avx512_vnni
"""
ARM_BF16 = """processor\t: 0
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp bf16 i8mm
CPU implementer\t: 0x41
"""
ARM_PLAIN = "processor\t: 0\nFeatures\t: fp asimd evtstrm crc32\n"


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: one torch thread


@pytest.mark.parametrize(
    "text, expected",
    [
        (X86_BF16, True),
        (X86_BF16.replace(" avx512_bf16", "").replace(" amx_bf16", ""), False),
        (X86_AVX2, False),  # AVX-512 without its BF16 extension: bf16 would be emulated
        (ARM_BF16, True),
        (ARM_PLAIN, False),
        ("", False),
        ("model name\t: some cpu with bf16 in its name\n", False),  # only the flags count
    ],
)
def test_cpuinfo_parser_reads_the_flags_line_only(text, expected):
    assert precision.cpuinfo_has_native_bf16(text) is expected


def test_cpu_detection_reads_proc_cpuinfo_once(monkeypatch):
    calls = []

    def fake_read_text(self, *args, **kwargs):
        calls.append(str(self))
        return X86_BF16

    monkeypatch.setattr(precision.platform, "system", lambda: "Linux")
    monkeypatch.setattr(precision.Path, "read_text", fake_read_text)
    precision.cpu_has_native_bf16.cache_clear()
    try:
        assert precision.cpu_has_native_bf16() and precision.cpu_has_native_bf16()
        assert calls == ["/proc/cpuinfo"]
    finally:
        precision.cpu_has_native_bf16.cache_clear()


def test_cpu_detection_is_false_where_cpuinfo_cannot_be_read(monkeypatch):
    def unreadable(self, *args, **kwargs):
        raise PermissionError("no")

    monkeypatch.setattr(precision.platform, "system", lambda: "Linux")
    monkeypatch.setattr(precision.Path, "read_text", unreadable)
    precision.cpu_has_native_bf16.cache_clear()
    try:
        assert precision.cpu_has_native_bf16() is False
        monkeypatch.setattr(precision.platform, "system", lambda: "Darwin")
        precision.cpu_has_native_bf16.cache_clear()
        assert precision.cpu_has_native_bf16() is False
    finally:
        precision.cpu_has_native_bf16.cache_clear()


@pytest.mark.parametrize("native", [True, False])
def test_autocast_dtype_on_the_cpu(monkeypatch, caplog, native):
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: native)
    precision._log_fp32_fallback.cache_clear()
    expected = torch.bfloat16 if native else None
    with caplog.at_level("INFO", logger="fewshotseg.precision"):
        assert precision.autocast_dtype(False, "cpu") is None
        assert precision.autocast_dtype("auto", "cpu") is expected
        assert "no native bf16" not in caplog.text  # "auto" falls back silently
        assert precision.autocast_dtype(True, torch.device("cpu")) is expected
    assert ("no native bf16" in caplog.text) == (not native)
    with pytest.raises(ValueError, match="True, False or 'auto'"):
        precision.autocast_dtype("on", "cpu")


def test_autocast_context_runs_convolutions_in_bf16_or_not_at_all():
    conv = torch.nn.Conv2d(1, 2, 3)
    x = torch.randn(1, 1, 8, 8)
    with precision.autocast(torch.bfloat16, "cpu"):
        assert conv(x).dtype == torch.bfloat16
    with precision.autocast(None, "cpu"):
        assert conv(x).dtype == torch.float32


@pytest.fixture
def forced_bf16(monkeypatch):
    """bf16 autocast on the CPU whatever this processor is (emulated where it lacks bf16)."""
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: True)


def _trainer(amp, iterations=60, sampler_seed=0, **kwargs):
    config = TrainConfig(
        iterations=iterations, lr=0.01, log_every=10, amp=amp, progress=False, **kwargs
    )
    return Trainer(tiny_model(), make_sampler(seed=sampler_seed), config, device="cpu")


def _held_out_loss(model):
    """fp32 (segmentation, total) loss on 16 episodes the training stream never shows."""
    batch = collate_episodes([make_sampler(seed=123).episode(i) for i in range(16)])
    model.eval()
    with torch.no_grad():
        total, seg, _ = episode_loss(
            model,
            batch.support_images,
            batch.support_masks,
            batch.query_images,
            batch.query_labels,
        )
    return float(seg), float(total)


def _grads(model):
    return torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])


@pytest.mark.parametrize("seed", range(4))
def test_a_bf16_step_computes_the_fp32_loss_and_gradient(forced_bf16, seed):
    # One step from the same weights on the same batch: bf16 rounding moves the numbers a
    # little (the cosine logits are scaled by 20: up to 7 % on the alignment loss) but must
    # not change the direction of descent. Measured on an AVX2 CPU: segmentation loss within
    # 2 %, total within 5 %, gradient cosine 0.986-0.997.
    batch = collate_episodes([make_sampler(seed=seed).episode(i) for i in range(4)])
    fp32, bf16 = _trainer(False), _trainer(True)
    assert (fp32._amp_dtype, bf16._amp_dtype) == (None, torch.bfloat16)
    out32, out16 = fp32.train_step(batch), bf16.train_step(batch)
    g32, g16 = _grads(fp32.model), _grads(bf16.model)
    assert not torch.equal(g16, g32)  # bf16 really ran
    assert torch.nn.functional.cosine_similarity(g16, g32, dim=0) > 0.95
    assert out16["seg_loss"] == pytest.approx(out32["seg_loss"], rel=0.05)
    assert out16["loss"] == pytest.approx(out32["loss"], rel=0.15)


def test_bf16_training_reduces_the_held_out_loss(forced_bf16):
    # 60 steps at lr 0.01 are chaotic: one run's end point moves with any rounding (fp32 itself
    # ends at seg 0.19-0.24, total 0.51-0.70 across four episode streams), so the mean over
    # four streams is compared with the untrained loss. Measured on an AVX2 CPU, 2 threads:
    # seg 0.398 -> 0.206 and total 0.914 -> 0.642 in bf16 (fp32: 0.210 and 0.613).
    seg0, total0 = _held_out_loss(tiny_model())
    ends = []
    for seed in range(4):
        trainer = _trainer(True, sampler_seed=seed)
        history = trainer.fit()
        assert all(np.isfinite(history.loss)) and all(np.isfinite(history.align_loss))
        ends.append(_held_out_loss(trainer.model))
    seg, total = np.mean(ends, axis=0)
    assert seg < 0.75 * seg0 and total < 0.9 * total0


def test_bf16_keeps_float32_state_and_runs_channels_last(forced_bf16):
    trainer = _trainer(True, iterations=3)
    conv_out = []
    first_conv = next(m for m in trainer.model.modules() if isinstance(m, torch.nn.Conv2d))
    first_conv.register_forward_hook(lambda mod, inp, out: conv_out.append(out.dtype))
    bn = [
        m for m in trainer.model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)
    ]
    assert bn, "the tiny model should have BatchNorm layers for this test"
    before = [m.running_mean.clone() for m in bn]
    trainer.fit()
    assert conv_out and set(conv_out) == {torch.bfloat16}  # autocast was on
    assert all(not torch.equal(m.running_mean, b) for m, b in zip(bn, before, strict=True))
    for name, t in trainer.model.state_dict().items():
        if t.is_floating_point():
            assert t.dtype == torch.float32, name
    for p in trainer.model.parameters():
        assert p.grad is None or p.grad.dtype == torch.float32
    states = [s for s in trainer.optimizer.state.values() if s]
    assert states
    for state in states:
        for value in state.values():
            if torch.is_tensor(value) and value.is_floating_point():
                assert value.dtype == torch.float32
    # bf16 on the CPU runs channels-last (what oneDNN's bf16 kernels want); fp32 keeps NCHW
    assert first_conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert not first_conv.weight.is_contiguous()
    fp32_conv = next(m for m in _trainer(False).model.modules() if isinstance(m, torch.nn.Conv2d))
    assert fp32_conv.weight.is_contiguous()
    saved = trainer.state_dict()
    assert all(v.dtype == torch.float32 for v in saved["model"].values() if v.is_floating_point())
