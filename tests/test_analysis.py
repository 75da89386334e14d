"""Tests of codecbench.analysis: BD-rate, RD plot, error grouping, CompressAI export (no servers)."""

from __future__ import annotations

import io
import json
import math
from collections.abc import Sequence
from pathlib import Path

import bjontegaard
import numpy as np
import pytest
import torch
from PIL import Image
from rich.console import Console

from codecbench import analysis, errors, values
from codecbench.cli import views
from codecbench.v1 import errors_pb2, experiment_pb2, orchestrator_pb2, types_pb2
from worker_svc import metrics

# A JPEG-like anchor and a test codec, in the experiments' own (unsorted) point order:
# (quality, bpp, PSNR dB, MS-SSIM).
ANCHOR = [(50, 0.85, 31.8, 0.975), (10, 0.32, 26.9, 0.904), (90, 2.26, 37.5, 0.993), (30, 0.62, 30.3, 0.963)]
TEST = [(1, 0.20, 27.1, 0.915), (2, 0.40, 30.2, 0.955), (3, 0.75, 33.4, 0.978), (4, 1.60, 37.1, 0.991)]


def experiment(
    name: str, points: Sequence[tuple[int, float, float, float | None]], experiment_id: str = "",
    encode_ms: float = 12.5, decode_ms: float = 7.25, dataset: str = "photos",
) -> orchestrator_pb2.Experiment:
    """A SUCCEEDED experiment whose points have these (quality, bpp, PSNR, MS-SSIM) means."""
    exp = orchestrator_pb2.Experiment(
        experiment_id=experiment_id or f"exp-{name}", state=experiment_pb2.EXPERIMENT_STATE_SUCCEEDED,
        dataset=dataset, worker_id="w-1",
    )
    exp.agent.name = name
    for i, (quality, bpp, psnr, ms_ssim) in enumerate(points):
        point = exp.result.points.add(point_index=i, params=values.params_from_python({"quality": quality}),
                                      image_count=8, bpp=bpp, psnr_db=psnr, encode_ms=encode_ms, decode_ms=decode_ms,
                                      lossless=math.isinf(psnr))
        if ms_ssim is not None:
            point.ms_ssim = ms_ssim
    return exp


def failed(experiment_id: str, agent: str, error: errors_pb2.Error) -> orchestrator_pb2.Experiment:
    exp = orchestrator_pb2.Experiment(experiment_id=experiment_id, state=experiment_pb2.EXPERIMENT_STATE_FAILED)
    exp.agent.name = agent
    exp.error.CopyFrom(error)
    return exp


def curve(name: str, points: Sequence[tuple[int, float, float, float | None]]) -> analysis.Curve:
    return analysis.Curve.from_experiment(experiment(name, points))


def test_bd_rate_of_a_curve_against_itself_is_zero() -> None:
    anchor = curve("jpeg", ANCHOR)
    for metric in analysis.BD_METRICS:
        result = analysis.bd_rate(anchor, anchor, metric)
        assert result.percent == pytest.approx(0.0, abs=1e-9), metric
        assert result.reason == ""
        assert result.overlap == pytest.approx(1.0)


def test_bd_rate_matches_the_bjontegaard_package_called_directly() -> None:
    result = analysis.bd_rate(curve("jpeg", ANCHOR), curve("learned", TEST), analysis.PSNR)
    anchor, test = sorted(ANCHOR, key=lambda p: p[1]), sorted(TEST, key=lambda p: p[1])
    expected = bjontegaard.bd_rate([p[1] for p in anchor], [p[2] for p in anchor], [p[1] for p in test],
                                   [p[2] for p in test], method="pchip")
    assert result.percent == pytest.approx(expected, rel=1e-12)
    assert result.percent < 0  # the test curve is above the anchor: fewer bits at equal PSNR


def test_bd_rate_on_ms_ssim_uses_the_db_scale() -> None:
    result = analysis.bd_rate(curve("jpeg", ANCHOR), curve("learned", TEST), analysis.MS_SSIM)
    anchor, test = sorted(ANCHOR, key=lambda p: p[1]), sorted(TEST, key=lambda p: p[1])
    expected = bjontegaard.bd_rate(
        [p[1] for p in anchor], [-10 * math.log10(1 - p[3]) for p in anchor],
        [p[1] for p in test], [-10 * math.log10(1 - p[3]) for p in test], method="pchip",
    )
    assert result.percent == pytest.approx(expected, rel=1e-12)


def test_bd_rate_of_the_same_quality_at_ninety_percent_of_the_rate_is_minus_ten_percent() -> None:
    cheaper = [(q, bpp * 0.9, psnr, ms) for q, bpp, psnr, ms in ANCHOR]
    result = analysis.bd_rate(curve("jpeg", ANCHOR), curve("cheaper", cheaper))
    assert result.percent == pytest.approx(-10.0, abs=1e-9)


@pytest.mark.parametrize(
    ("points", "metric", "reason"),
    [
        ([(6, 17.8, math.inf, 1.0)], analysis.PSNR, "has an infinite PSNR at quality=6"),
        ([(6, 17.8, math.inf, 1.0)], analysis.MS_SSIM, "has an infinite MS-SSIM at quality=6"),
        ([(50, 0.85, 31.8, 0.975)], analysis.PSNR, "has 1 parameter point(s); BD-rate needs at least 4 per curve"),
        (ANCHOR[:3], analysis.PSNR, "has 3 parameter point(s); BD-rate needs at least 4 per curve"),
        ([(10, 0.3, 27.0, 0.9), (20, 0.5, 26.0, 0.93), (30, 0.6, 28.0, 0.95), (40, 0.8, 29.0, 0.96)],
         analysis.PSNR, "PSNR does not increase with the rate"),
        ([(10, 0.3, 27.0, None), (20, 0.5, 29.0, None), (30, 0.6, 30.0, None), (40, 0.8, 31.0, None)],
         analysis.MS_SSIM, "has no MS-SSIM at quality=10"),
        ([(10, 0.3, 45.0, 0.9), (20, 0.5, 48.0, 0.93), (30, 0.6, 49.0, 0.95), (40, 0.8, 50.0, 0.96)],
         analysis.PSNR, "the PSNR ranges do not overlap"),
        # Hostile test of issue 20: a NaN bpp raised from the bjontegaard package, a NaN PSNR was "infinite".
        ([(10, math.nan, 27.0, 0.9), (20, 0.5, 29.0, 0.93), (30, 0.6, 30.0, 0.95), (40, 0.8, 31.0, 0.96)],
         analysis.PSNR, "has nan bpp at quality=10; the rate must be a positive finite number"),
        ([(10, 0.3, math.nan, 0.9), (20, 0.5, 29.0, 0.93), (30, 0.6, 30.0, 0.95), (40, 0.8, 31.0, 0.96)],
         analysis.PSNR, "has no PSNR value at quality=10 (NaN): the metric was not measured"),
    ],
)
def test_bd_rate_says_why_it_is_not_computable(
    points: list[tuple[int, float, float, float | None]], metric: str, reason: str
) -> None:
    result = analysis.bd_rate(curve("jpeg", ANCHOR), curve("odd", points), metric)
    assert result.percent is None
    assert result.reason.startswith("not computable: ")
    assert reason in result.reason
    assert "exp-odd" in result.reason  # names the experiment


def test_bd_rate_table_rows_and_low_overlap_note() -> None:
    anchor = curve("jpeg", ANCHOR)
    narrow = curve("narrow", [(1, 0.3, 26.0, 0.90), (2, 0.33, 26.7, 0.91), (3, 0.36, 27.4, 0.92), (4, 0.4, 28.0, 0.93)])
    rows = analysis.bd_rate_table([anchor, narrow], anchor)
    assert [r.curve.name for r in rows] == ["jpeg", "narrow"]
    psnr = rows[1].results[0]
    assert psnr.metric == analysis.PSNR and psnr.percent is not None
    assert psnr.overlap == pytest.approx((28.0 - 26.9) / (37.5 - 26.0))
    assert "common PSNR range only" in psnr.note
    encoded = json.loads(json.dumps(rows[0].to_json(), allow_nan=False))
    assert encoded["bd_rate"]["psnr"]["percent"] == pytest.approx(0.0, abs=1e-9)


def test_a_failed_experiment_has_no_curve() -> None:
    exp = failed("exp-broken", "broken", errors.AgentException("boom").to_proto())
    with pytest.raises(ValueError, match="exp-broken .broken. is FAILED"):
        analysis.Curve.from_experiment(exp)


def test_group_errors_counts_by_kind_location_and_exception() -> None:
    def zero_division() -> errors_pb2.Error:
        return errors.AgentException("division by zero", phase=types_pb2.PHASE_ENCODE, location="codec.py:8",
                                     exception_type="ZeroDivisionError").to_proto()

    timeout = errors.Timeout("encode did not finish within 5 s", phase=types_pb2.PHASE_ENCODE, limit_s=5.0,
                             elapsed_s=5.01).to_proto()
    experiments = [  # newest first
        failed("exp-5", "cand-b", zero_division()),
        orchestrator_pb2.Experiment(experiment_id="exp-4", state=experiment_pb2.EXPERIMENT_STATE_SUCCEEDED),
        failed("exp-3", "cand-a", zero_division()),
        failed("exp-2", "slow", timeout),
        failed("exp-1", "cand-a", zero_division()),
    ]
    cancelled = failed("exp-0", "x", errors.Cancelled("cancelled").to_proto())
    cancelled.state = experiment_pb2.EXPERIMENT_STATE_CANCELLED
    groups = analysis.group_errors([*experiments, cancelled])
    assert [(g.kind, g.location, g.exception_type, g.count) for g in groups] == [
        ("AGENT_EXCEPTION", "codec.py:8", "ZeroDivisionError", 3),
        ("TIMEOUT", "", "", 1),
    ]
    assert groups[0].example_experiment_id == "exp-5"
    assert groups[0].agents == ("cand-a", "cand-b")
    assert groups[0].example_message == "AGENT_EXCEPTION at codec.py:8 in encode: ZeroDivisionError: division by zero"
    assert groups[1].example_experiment_id == "exp-2"


def test_error_location_falls_back_to_the_innermost_frame() -> None:
    frames = [errors_pb2.Frame(file="codec.py", line=3), errors_pb2.Frame(file="util.py", line=9)]
    error = errors_pb2.Error(frames=frames)
    assert analysis.error_location(error) == "util.py:9"
    assert analysis.error_location(errors_pb2.Error()) == ""


def test_compressai_export_layout() -> None:
    exp = experiment("jpeg", [(10, 0.32, 26.9, 0.904), (90, 2.26, 37.5, None)], encode_ms=12.5, decode_ms=7.25)
    exported = json.loads(json.dumps(analysis.compressai_results(exp), allow_nan=False))
    assert set(exported) == {"name", "description", "results"}
    assert exported["name"] == "jpeg"
    assert "exp-jpeg" in exported["description"] and "quality=10" in exported["description"]
    results = exported["results"]
    assert set(results) == {"bpp", "psnr-rgb", "ms-ssim-rgb", "encoding_time", "decoding_time"}
    assert results["bpp"] == [0.32, 2.26]
    assert results["psnr-rgb"] == [26.9, 37.5]
    assert results["ms-ssim-rgb"] == [0.904, None]
    assert results["encoding_time"] == [0.0125, 0.0125]  # seconds, as CompressAI's eval_model writes them
    assert results["decoding_time"] == [0.00725, 0.00725]


def test_export_of_a_lossless_point_is_valid_json() -> None:
    exported = analysis.compressai_results(experiment("zlib", [(6, 17.8, math.inf, 1.0)]))
    assert json.loads(json.dumps(exported, allow_nan=False))["results"]["psnr-rgb"] == ["Infinity"]


def test_json_safe_spells_non_finite_floats_like_protobuf() -> None:
    data = {"a": [math.inf, -math.inf, 1.5], "b": (math.nan,), "c": "x"}
    assert analysis.json_safe(data) == {"a": ["Infinity", "-Infinity", 1.5], "b": ["NaN"], "c": "x"}


def test_rd_plot_writes_a_png_and_notes_lossless_curves(tmp_path: Path) -> None:
    path = tmp_path / "plots" / "rd.png"
    curves = [curve("jpeg", ANCHOR), curve("learned", TEST), curve("zlib", [(6, 17.8, math.inf, 1.0)])]
    notes = analysis.rd_plot(curves, path, title="test")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert path.stat().st_size > 10_000
    assert notes == ["zlib: lossless (every image exact; PSNR = inf, not drawn) quality=6 at 17.80 bpp"]


# -- issue 13: figures that say what they measured ----------------------------------------------


def _jpeg_curve(qualities: Sequence[int], name: str) -> analysis.Curve:
    """A real JPEG RD curve (Pillow) of one fresh 96x128 image: per-point bpp and PSNR."""
    rng = np.random.default_rng(3)
    yy, xx = np.mgrid[0:96, 0:128]
    pixels = np.clip(np.stack([xx * 2, yy * 2, xx + yy], axis=-1) + rng.normal(0, 10, (96, 128, 3)), 0, 255)
    image = Image.fromarray(pixels.astype(np.uint8), "RGB")
    exp = orchestrator_pb2.Experiment(experiment_id=f"exp-{name}", state=experiment_pb2.EXPERIMENT_STATE_SUCCEEDED,
                                      dataset="one")
    exp.agent.name = "jpeg"
    for quality in qualities:
        out = io.BytesIO()
        image.save(out, format="JPEG", quality=quality)
        decoded = np.asarray(Image.open(io.BytesIO(out.getvalue())).convert("RGB"), dtype=np.float64)
        mse = float(np.mean((decoded - np.asarray(image, dtype=np.float64)) ** 2))
        exp.result.points.add(params=values.params_from_python({"quality": quality}), image_count=1,
                              bpp=8 * len(out.getvalue()) / (96 * 128), psnr_db=10 * math.log10(255**2 / mse))
    return analysis.Curve.from_experiment(exp)


def test_bd_rate_refuses_curves_of_fewer_than_four_points() -> None:
    five, two = _jpeg_curve([10, 30, 50, 70, 90], "five"), _jpeg_curve([10, 90], "two")
    # The inputs reproduce the nonsense: the package itself gives the same codec a BD-rate far from 0.
    raw = bjontegaard.bd_rate([p.bpp for p in five.points], [p.psnr_db for p in five.points],
                              [p.bpp for p in two.points], [p.psnr_db for p in two.points], method="pchip",
                              require_matching_points=False, min_overlap=0)
    assert abs(raw) > 1.0
    result = analysis.bd_rate(five, two)
    assert result.percent is None
    assert "exp-two" in result.reason and "needs at least 4 per curve" in result.reason
    four = _jpeg_curve([10, 30, 50, 70], "four")
    assert analysis.bd_rate(five, four).percent == pytest.approx(0.0, abs=1.0)  # the same codec: near 0


def test_curves_of_different_datasets_are_refused_unless_allowed_and_then_flagged() -> None:
    anchor = curve("jpeg", ANCHOR)
    elsewhere = analysis.Curve.from_experiment(experiment("jpeg", ANCHOR, experiment_id="exp-kodak", dataset="kodak"))
    same = curve("learned", TEST)
    with pytest.raises(analysis.DifferentDatasets, match=r"exp-jpeg.*'photos'.*exp-kodak.*'kodak'"):
        analysis.bd_rate_table([same, elsewhere], anchor)
    rows = analysis.bd_rate_table([same, elsewhere], anchor, allow_different_datasets=True)
    assert [(r.other_dataset, r.to_json()["different_dataset"]) for r in rows] == [("", False), ("photos", True)]
    assert "'kodak'" in rows[1].dataset_note and "'photos'" in rows[1].dataset_note
    assert rows[1].results[0].percent == pytest.approx(0.0, abs=1e-9)  # computed, but flagged
    text = _render(views.bd_rate_view(rows, anchor))
    assert "kodak [1]" in text and "[1] measured on dataset 'kodak', the baseline on 'photos'" in text


def _render(renderable: object) -> str:
    console = Console(width=200, record=True, file=io.StringIO())
    console.print(renderable)
    return console.export_text()


def test_a_point_with_one_exact_image_is_never_called_lossless(tmp_path: Path) -> None:
    # A flat-gray decoder on a set with one flat gray image: that image is exact, the other is not.
    flat = torch.full((3, 24, 32), 128, dtype=torch.uint8)
    textured = torch.randint(0, 256, (3, 24, 32), generator=torch.Generator().manual_seed(1), dtype=torch.uint8)
    items = [experiment_pb2.ImageResult(image_index=i, metrics=metrics.image_metrics(x, flat, b"g", 1.0, 1.0))
             for i, x in enumerate((flat, textured))]
    exp = experiment("gray", [])
    exp.result.points.append(metrics.point_result(0, values.params_from_python({"level": 128}), items))
    notes = analysis.rd_plot([analysis.Curve.from_experiment(exp)], tmp_path / "rd.png")
    said = "gray: 1 of 2 images exact level=128 at 0.01 bpp; the pooled PSNR drawn counts them with MSE 0"
    assert notes[1:] == [said]
    table = _render(views.results_table([exp]))
    assert "no (1/2 exact)" in table and "inf" not in table


def test_export_says_which_points_average_fewer_images() -> None:
    exp = experiment("jpeg", [(10, 0.32, 26.9, 0.904), (90, 2.26, 37.5, 0.99)])
    exp.result.points[1].lossless_image_count = 3
    exp.result.points[0].ms_ssim_image_count = 5
    description = analysis.compressai_results(exp)["description"]
    assert "quality=90: 3 of 8 images exact (psnr-rgb is the mean of the other 5)" in description
    assert "quality=10: ms-ssim-rgb over 5 of 8 images" in description


def test_message_json_keeps_fields_whose_value_is_zero() -> None:
    point = experiment_pb2.PointResult(psnr_db=0.0, bpp=0.5, lossless=False)
    shown = views.message_json(point)
    assert shown["psnr_db"] == 0.0 and shown["lossless"] is False and shown["lossless_image_count"] == 0
    assert "ms_ssim" not in shown  # a field with presence stays absent when it was never measured


# -- issue 13 (round d): inexactness is never rewarded --------------------------------------------


def _jpeg_points(qualities: Sequence[int], degrade_flat: bool, name: str) -> orchestrator_pb2.Experiment:
    """A real JPEG experiment (Pillow, real metrics) on two textured images and one flat gray one,
    which JPEG codes exactly; ``degrade_flat`` adds noise to the flat image's reconstruction
    (about 35 dB) and a byte to its bitstream: a strictly worse codec."""
    rng = np.random.default_rng(5)
    yy, xx = np.mgrid[0:176, 0:192]
    textured = [np.clip(np.stack([xx + k * 40, yy * 2, xx + yy], axis=-1) + rng.normal(0, 6, (176, 192, 3)), 0, 255)
                .astype(np.uint8) for k in range(2)]
    images = [*textured, np.full((176, 192, 3), 128, np.uint8)]
    exp = experiment(name, [], experiment_id=f"exp-{name}", dataset="mix")
    for index, quality in enumerate(qualities):
        items = []
        for i, pixels in enumerate(images):
            out = io.BytesIO()
            Image.fromarray(pixels, "RGB").save(out, format="JPEG", quality=quality)
            bitstream = out.getvalue()
            decoded = torch.from_numpy(np.asarray(Image.open(io.BytesIO(bitstream)).convert("RGB")).copy())
            if degrade_flat and i == 2:
                noise = torch.randint(-6, 7, decoded.shape, generator=torch.Generator().manual_seed(0))
                decoded = (decoded.int() + noise).clamp(0, 255).to(torch.uint8)
                bitstream += b"x"
            original = torch.from_numpy(pixels).permute(2, 0, 1)
            items.append(experiment_pb2.ImageResult(image_index=i, metrics=metrics.image_metrics(
                original, decoded.permute(2, 0, 1).contiguous(), bitstream, 1.0, 1.0)))
        exp.result.points.append(metrics.point_result(index, values.params_from_python({"quality": quality}), items))
    return exp


def test_a_strictly_worse_codec_never_gets_a_better_bd_rate_or_plot(tmp_path: Path) -> None:
    # Old: the mean PSNR left the exact flat image out, so degrading it raised the mean: -78.9 % here.
    qualities = [30, 50, 70, 85, 95]
    anchor = analysis.Curve.from_experiment(_jpeg_points(qualities, False, "jpeg"))
    worse = analysis.Curve.from_experiment(_jpeg_points(qualities, True, "worse"))
    assert all(p.lossless_image_count == 1 for p in anchor.points)
    assert all(w.psnr_db > a.psnr_db for a, w in zip(anchor.points, worse.points, strict=True))  # the trap
    on_means = bjontegaard.bd_rate([p.bpp for p in anchor.points], [p.psnr_db for p in anchor.points],
                                   [p.bpp for p in worse.points], [p.psnr_db for p in worse.points], method="pchip",
                                   require_matching_points=False, min_overlap=0)
    assert on_means < 0  # what the per-image means would have said
    result = analysis.bd_rate(anchor, worse, analysis.PSNR)
    assert result.convention == analysis.POOLED and result.percent is not None and result.percent > 0
    assert "pooled bpp and pooled PSNR" in result.note and result.to_json()["convention"] == "pooled"
    row = analysis.bd_rate_table([worse], anchor)[0]
    assert row.to_json()["bd_rate"]["psnr"]["convention"] == "pooled"
    notes = analysis.rd_plot([anchor, worse], tmp_path / "rd.png")
    assert notes[0].startswith("every curve drawn at pooled bpp and pooled PSNR")
    # Without exact images anywhere, the per-image means are used, and said so.
    assert analysis.bd_rate(curve("jpeg", ANCHOR), curve("learned", TEST)).convention == analysis.MEANS


def test_an_ms_ssim_over_fewer_images_than_the_rate_is_flagged_in_the_row() -> None:
    partial = experiment("learned", TEST)
    partial.result.points[2].ms_ssim_image_count = 5
    result = analysis.bd_rate(curve("jpeg", ANCHOR), analysis.Curve.from_experiment(partial), analysis.MS_SSIM)
    assert result.percent is not None
    assert "exp-learned" in result.caveats[0] and "MS-SSIM over 5 of 8 images" in result.caveats[0]
    assert "MS-SSIM covers fewer images than the rate" in result.note


def test_duplicate_points_are_called_duplicates_not_a_non_monotonic_curve() -> None:
    duplicated = [*ANCHOR, (55, 0.85, 31.8, 0.975)]
    result = analysis.bd_rate(curve("jpeg", ANCHOR), curve("dup", duplicated))
    assert result.percent is None
    assert "duplicate points (quality=50 and quality=55" in result.reason and "does not increase" not in result.reason


def test_message_json_of_an_agent_reported_point_has_no_measured_looking_zeros() -> None:
    # Old: bpp 0.0, mse 0.0, psnr_db 0.0, lossless false... for a point that coded no image.
    exp = experiment("seed", [])
    point = exp.result.points.add(point_index=0, encode_ms=3.0, decode_ms=2.0)
    point.agent_report.values["ratio"].float_value = 2.5
    measured = exp.result.points.add(point_index=1, bpp=0.0, psnr_db=0.0)
    shown = views.message_json(exp)["result"]["points"]
    for name in ("bpp", "mse", "psnr_db", "lossless", "pooled_bpp", "pooled_psnr_db", "total_bytes", "images"):
        assert name not in shown[0], name
    assert shown[0]["encode_ms"] == 3.0 and shown[0]["agent_report"]["values"]["ratio"] == {"float_value": 2.5}
    assert shown[1]["bpp"] == 0.0 and shown[1]["lossless"] is False and measured.psnr_db == 0.0  # measured: kept


def _image_seed_experiment() -> orchestrator_pb2.Experiment:
    """An image-taking seed agent's experiment: measured points whose images carry agent reports."""
    exp = experiment("seed_example", [(0, 18.2, math.inf, 1.0)])
    image = exp.result.points[0].images.add(image_index=0, image_name="astronaut.png")
    image.metrics.bytes = 4321
    image.metrics.agent_report.values["decoded_bytes"].int_value = 7
    image.metrics.agent_report.ignored_keys.append("blocks")
    return exp


def test_per_image_agent_reports_are_in_the_run_view_and_the_export() -> None:
    # Old: only `show` had the image-taking seed shape's own figures.
    exp = _image_seed_experiment()
    text = _render(views.results_view([exp]))
    assert "agent-reported (the agent's own figures, NOT measured by codecbench)" in text
    assert "astronaut.png" in text and "decoded_bytes=7" in text and "blocks" in text
    exported = analysis.compressai_results(exp)
    assert exported["agent_reported"] == [{"values": {"decoded_bytes": 7}, "not_scalar": ["blocks"],
                                           "params": "quality=0", "image": "astronaut.png"}]
    assert "NOT measured" in exported["description"] and exported["results"]["bpp"] == [18.2]


def test_agent_reported_only_results_do_not_claim_a_warm_up() -> None:
    # Old: "times after one untimed warm-up call per point" under points that had no warm-up.
    exp = experiment("seed_original", [])
    exp.result.points.add(point_index=0, encode_ms=3.0, decode_ms=2.0).agent_report.encoding_data_bytes = 9
    text = _render(views.results_view([exp]))
    assert "warm-up call per point" not in text and "without warm-up" in text
    measured = _render(views.results_view([experiment("jpeg", ANCHOR)]))
    assert "times after one untimed warm-up call per point" in measured and "without warm-up" not in measured


def test_rank_never_raises_on_non_finite_figures() -> None:
    nan_rate = experiment("nan-rate", [(q, math.nan if q == 2 else b, p, m) for q, b, p, m in TEST])
    nan_psnr = experiment("nan-psnr", [(q, b, math.nan if q == 2 else p, m) for q, b, p, m in TEST])
    ranking = analysis.rank(experiment("jpeg", ANCHOR), [nan_rate, nan_psnr, experiment("ok", TEST)])
    assert [r.experiment_id for r in ranking.ranked] == ["exp-ok"]
    reasons = {r.experiment_id: r.bd_rate.reason for r in ranking.not_computable}
    assert "nan bpp" in reasons["exp-nan-rate"] and "infinite" not in reasons["exp-nan-psnr"]
