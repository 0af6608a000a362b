"""Short text tables of what an export proved, for the terminal; the JSON beside the model has it all."""
from __future__ import annotations

from contracts.calibration import ECE_BINS
from export.parity import ParityReport
from export.quantize import SpeedComparison


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.2f}%"


def parity_table(title: str, report: ParityReport) -> str:
    lines = [title, f"  compared on: {report.dataset_note}; {len(report.inputs)} batches in all"]
    header = f"  {'provider':<22} {'output':<14} {'max abs diff':>12} {'max rel diff':>12}  worst input"
    lines.append(header)
    for result in report.providers:
        for index, diff in enumerate(result.outputs):
            provider = result.provider if index == 0 else ""
            lines.append(
                f"  {provider:<22} {diff.output:<14} {diff.max_abs_diff:>12.3g} {diff.max_rel_diff:>12.3g}  "
                f"{diff.worst_input or '- (identical)'}"
            )
        if result.top1 is not None:
            top1 = result.top1
            line = f"  {'':<22} top-1 agreement {top1.percent:.3f}% ({top1.agreeing}/{top1.total})"
            if result.images:
                line += (
                    f"; test accuracy on {result.images} images: torch {_percent(result.torch_accuracy)}, "
                    f"onnx {_percent(result.onnx_accuracy)}"
                )
            lines.append(line)
        if result.ece_calibrated is not None:
            lines.append(
                f"  {'':<22} ECE ({ECE_BINS} bins) on {result.images} images: softmax of the logits "
                f"{_percent(result.ece_uncalibrated)}, probabilities output {_percent(result.ece_calibrated)}"
                + ("" if report.temperature is None else f" (temperature {report.temperature:.4g})")
            )
    if report.enforced:
        verdict = "PASS" if report.passed else "FAIL"
        lines.append(
            f"  {verdict}: tolerance max abs diff <= {report.atol:g}"
            + (f", top-1 agreement >= {report.min_top1_agreement:g}%" if any(r.top1 for r in report.providers) else "")
        )
        lines += [f"    {failure}" for failure in report.failures()]
    return "\n".join(lines)


def int8_table(
    title: str,
    fp32_accuracy: float,
    int8_accuracy: float,
    images: int,
    max_drop_points: float,
    speeds: list[SpeedComparison],
) -> str:
    drop = 100 * (fp32_accuracy - int8_accuracy)
    verdict = "PASS" if drop <= max_drop_points else "FAIL"
    lines = [
        title,
        f"  test accuracy on {images} images: fp32 {_percent(fp32_accuracy)}, int8 {_percent(int8_accuracy)} "
        f"(drop {drop:+.2f} points; {verdict}: allowed {max_drop_points:g})",
        f"  {'batch':>5} {'fp32 ms':>9} {'int8 ms':>9} {'int8 speed-up':>14}   (CPU, same run, median)",
    ]
    for speed in speeds:
        lines.append(f"  {speed.batch_size:>5} {speed.fp32_ms:>9.3f} {speed.int8_ms:>9.3f} {speed.speedup:>13.2f}x")
    return "\n".join(lines)
