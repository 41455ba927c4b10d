"""What a saved ``.mlpackage`` holds: its program, I/O description and our metadata."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..checkpoint import hash_file_into
from ..network_spec import ModelError

METADATA_PREFIX = "vs_coreml_esrgan."
_DTYPES = {"FLOAT16": np.dtype(np.float16), "FLOAT32": np.dtype(np.float32)}


@dataclass(frozen=True)
class PackageInfo:
    """Input/output contract and conversion metadata of one converted model."""

    path: Path
    input_name: str
    output_name: str
    input_shape: tuple[int, int, int, int]  # (batch, channels, height, width)
    output_shape: tuple[int, int, int, int]
    input_dtype: np.dtype
    output_dtype: np.dtype
    metadata: dict[str, str]

    @property
    def batch(self) -> int:
        return self.input_shape[0]

    @property
    def tile(self) -> tuple[int, int]:
        """(width, height) of the fixed input tile."""
        return self.input_shape[3], self.input_shape[2]

    @property
    def scale(self) -> int:
        return self.output_shape[2] // self.input_shape[2]

    @property
    def precision(self) -> str:
        return self.metadata.get("precision", "fp16" if self.input_dtype == np.float16
                                 else "fp32")


def import_coremltools() -> Any:
    """coremltools, imported without its import-time chatter (on Linux it reports every
    macOS-only proxy it cannot load). Raises ModelError when it is not installed."""
    import contextlib
    import io
    import logging

    try:
        with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(
                io.StringIO()):
            import coremltools
    except ImportError:
        raise ModelError("coremltools is not installed: pip install "
                         "'vs-coreml-esrgan[coreml]'") from None
    logging.getLogger("coremltools").setLevel(logging.ERROR)
    return coremltools


def load_spec(path: str | os.PathLike[str]) -> Any:
    """The protobuf model spec of a ``.mlpackage`` (no Core ML runtime needed)."""
    path = Path(path)
    if not (path / "Manifest.json").is_file():
        raise ModelError(f"{path} is not a Core ML package (no Manifest.json inside); "
                         "make one with: vs-coreml-esrgan convert CHECKPOINT -o NAME.mlpackage")
    ct = import_coremltools()
    try:
        return ct.models.MLModel(str(path), skip_model_load=True).get_spec()
    except Exception as exc:  # coremltools raises many types for damaged packages
        raise ModelError(f"{path}: unreadable Core ML package ({type(exc).__name__}: "
                         f"{exc})") from None


def read_package(path: str | os.PathLike[str]) -> PackageInfo:
    """Read and check a package: one fixed-shape 4-D tensor input and output, float16 or
    float32, an ML Program. Raises ModelError saying what is off."""
    path = Path(path)
    spec = load_spec(path)
    if spec.WhichOneof("Type") != "mlProgram":
        raise ModelError(f"{path}: expected an ML Program, got {spec.WhichOneof('Type')}")
    inputs, outputs = spec.description.input, spec.description.output
    if len(inputs) != 1 or len(outputs) != 1:
        raise ModelError(f"{path}: expected one input and one output, got {len(inputs)} and "
                         f"{len(outputs)}")
    in_shape, in_dtype = _array_type(path, inputs[0])
    out_shape, out_dtype = _array_type(path, outputs[0])
    metadata = {key.removeprefix(METADATA_PREFIX): value
                for key, value in spec.description.metadata.userDefined.items()
                if key.startswith(METADATA_PREFIX)}
    return PackageInfo(path=path, input_name=inputs[0].name, output_name=outputs[0].name,
                       input_shape=in_shape, output_shape=out_shape, input_dtype=in_dtype,
                       output_dtype=out_dtype, metadata=metadata)


def _array_type(path: Path, feature: Any) -> tuple[tuple[int, int, int, int], np.dtype]:
    kind = feature.type.WhichOneof("Type")
    if kind != "multiArrayType":
        raise ModelError(f"{path}: {feature.name} is {kind}, expected a multi-array "
                         "(TensorType): image types rescale values and are not supported")
    array = feature.type.multiArrayType
    shape = tuple(int(d) for d in array.shape)
    if len(shape) != 4 or array.WhichOneof("ShapeFlexibility") is not None:
        raise ModelError(f"{path}: {feature.name} must have a fixed 4-D shape, got {shape}"
                         + (" with flexible sizes" if array.WhichOneof("ShapeFlexibility")
                            else ""))
    data_types = import_coremltools().proto.FeatureTypes_pb2.ArrayFeatureType.ArrayDataType
    name = data_types.Name(array.dataType)
    if name not in _DTYPES:
        raise ModelError(f"{path}: {feature.name} has data type {name}, expected FLOAT16 "
                         "or FLOAT32")
    return shape, _DTYPES[name]  # type: ignore[return-value]


def package_digest(path: str | os.PathLike[str]) -> str:
    """sha256 over every file of a package (relative names and contents), for cache keys."""
    digest = hashlib.sha256()
    root = Path(path)
    for file in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(file.relative_to(root).as_posix().encode() + b"\0")
        hash_file_into(digest, file)
    return digest.hexdigest()
