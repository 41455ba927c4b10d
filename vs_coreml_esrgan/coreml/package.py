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
WEIGHTS = Path("Data", "com.apple.CoreML", "weights", "weight.bin")
_DTYPES = {"FLOAT16": np.dtype(np.float16), "FLOAT32": np.dtype(np.float32)}
_FP16 = 10  # MIL DataType enum value
_BLOB_READERS = {_FP16: "read_fp16_data", 11: "read_float_data", 23: "read_int32_data",
                 21: "read_int8_data", 31: "read_uint8_data"}
_CONVERT_AGAIN = "convert the model again (vs-coreml-esrgan convert, or clear the cache)"


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
    if not path.exists():
        raise ModelError(f"Core ML package {str(path)!r} does not exist")
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
    overlap = metadata.get("overlap")
    if overlap is not None and not (overlap.isascii() and overlap.isdigit()):
        raise ModelError(f"{path}: its metadata says overlap {overlap!r}, expected a "
                         f"non-negative whole number; {_CONVERT_AGAIN}")
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


def blob_reader(path: str | os.PathLike[str]) -> Any:
    """A reader for a package's weight file, or None when the package has none.

    Raises ModelError when the file exists but its header is unreadable."""
    weights = Path(path) / WEIGHTS
    if not weights.is_file():
        return None
    import_coremltools()
    from coremltools.libmilstoragepython import _BlobStorageReader

    try:
        return _BlobStorageReader(str(weights))
    except Exception as exc:  # the C++ reader raises RuntimeError and others
        raise ModelError(f"{path}: the weight file {WEIGHTS.as_posix()} is damaged "
                         f"({exc}); {_CONVERT_AGAIN}") from None


def read_blob(reader: Any, data_type: int, offset: int, path: str | os.PathLike[str],
              name: str) -> np.ndarray:
    """One weight tensor's values (flat) from the package's weight file.

    Raises ModelError naming the package and the tensor when the file is missing, damaged
    or truncated, or the tensor holds NaN or infinity (which would give NaN frames)."""
    if reader is None:
        raise ModelError(f"{path}: {name} is stored in {WEIGHTS.as_posix()}, which is "
                         f"missing: the package is incomplete; {_CONVERT_AGAIN}")
    if data_type not in _BLOB_READERS:
        raise ModelError(f"{path}: {name} is stored with data type {data_type}, which "
                         "this reader does not support")
    try:
        data = np.asarray(getattr(reader, _BLOB_READERS[data_type])(offset))
    except Exception as exc:  # damaged or truncated blobs: RuntimeError, IndexError, ...
        raise ModelError(f"{path}: the weight file {WEIGHTS.as_posix()} is damaged: {name} "
                         f"at offset {offset} cannot be read ({exc}); {_CONVERT_AGAIN}"
                         ) from None
    if data_type == _FP16 and data.dtype == np.uint16:  # the reader hands back raw bits
        data = data.view(np.float16)
    if data.dtype.kind == "f" and not np.isfinite(data).all():
        bad = int(data.size - np.count_nonzero(np.isfinite(data)))
        raise ModelError(f"{path}: the weights are not finite: {name} holds {bad} NaN or "
                         f"infinite values of {data.size}; convert again from a checkpoint "
                         "with finite weights (fp16 also overflows above 65504)")
    return data


def check_weights(path: str | os.PathLike[str]) -> int:
    """Read every weight tensor of a package; returns how many there are.

    Raises ModelError as :func:`read_blob` does: a damaged package is reported before any
    runtime loads it."""
    function = load_spec(path).mlProgram.functions.get("main")
    if function is None:
        raise ModelError(f"{path}: the ML Program has no 'main' function")
    reader = blob_reader(path)
    count = 0
    for op in function.block_specializations[function.opset].operations:
        if op.type != "const" or op.attributes["val"].WhichOneof("value") != "blobFileValue":
            continue
        value = op.attributes["val"]
        read_blob(reader, value.type.tensorType.dataType, value.blobFileValue.offset, path,
                  op.outputs[0].name)
        count += 1
    return count
