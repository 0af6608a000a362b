"""Everything one `python -m export` run is told, as one record (filled from the command line)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from export.onnx_export import DEFAULT_OPSET
from export.optimize import DEFAULT_LEVEL
from export.parity import DEFAULT_ATOL, DEFAULT_MIN_TOP1_AGREEMENT
from export.quantize import DEFAULT_CALIBRATION_IMAGES, DEFAULT_MAX_ACCURACY_DROP
from export.source import DEFAULT_RUNS_DIR

DEFAULT_OUTPUT_DIR = "models"


@dataclass
class ExportConfig:
    model_names: list[str] = field(default_factory=list)
    all_models: bool = False  # --all: options that do not apply to a model are skipped, not refused
    checkpoint_path: Path | None = None  # default: RUNS_DIR/NAME/checkpoint.pt
    runs_dir: Path = Path(DEFAULT_RUNS_DIR)
    output_path: Path | None = None  # default: OUTPUT_DIR/NAME.onnx
    output_dir: Path = Path(DEFAULT_OUTPUT_DIR)
    # A model repository (Triton's layout): the export becomes REPO/NAME/<next version>/model.onnx.
    repository: Path | None = None
    opset: int = DEFAULT_OPSET
    random_weights: bool = False
    seed: int = 0  # random weights and random parity inputs
    data_dir: Path | None = None  # default: $ZOO_DATA_DIR, else ./data
    atol: float = DEFAULT_ATOL
    min_top1_agreement: float = DEFAULT_MIN_TOP1_AGREEMENT  # percent
    cpu_only: bool = False
    optimize: bool = False
    optimize_level: str = DEFAULT_LEVEL
    quantize: str | None = None  # "int8"
    calibration_images: int = DEFAULT_CALIBRATION_IMAGES
    max_accuracy_drop: float = DEFAULT_MAX_ACCURACY_DROP  # percentage points

    def output_for(self, model_name: str) -> Path:
        return self.output_path if self.output_path is not None else self.output_dir / f"{model_name}.onnx"


@dataclass(frozen=True)
class ArtifactPaths:
    """Every file one export writes, named after the model file: models/lenet.onnx -> models/lenet.*"""

    model: Path

    def _sibling(self, suffix: str) -> Path:
        return self.model.with_name(self.model.name.removesuffix(".onnx") + suffix)

    @property
    def parity_report(self) -> Path:
        return self._sibling(".parity.json")

    @property
    def test_data_dir(self) -> Path:
        """Holds test_data_set_0/ (the ONNX model zoo layout)."""
        return self._sibling(".test_data")

    @property
    def optimized(self) -> Path:
        return self._sibling(".opt.onnx")

    @property
    def int8(self) -> Path:
        return self._sibling(".int8.onnx")

    @staticmethod
    def staged(path: Path) -> Path:
        """Where a file waits until its checks pass; only then does it take its real name."""
        return path.with_name(f".{path.name}.staged")

    @property
    def rejected_report(self) -> Path:
        """The report of an export that failed: the installed model (if any) keeps its own."""
        return self._sibling(".rejected.parity.json")

    @staticmethod
    def rejected(path: Path) -> Path:
        """Where a file that failed its checks is kept for inspection. Not *.onnx, so that a server
        scanning the folder for models never loads it."""
        return path.with_name(path.name + ".rejected")
