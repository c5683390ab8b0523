"""Models the tests create at run time, none of them in the zoo (a user's own files):

* a scikit-learn RandomForest on ``load_digits`` (64 features, classes 0..9), saved with joblib and converted
  to ONNX (skl2onnx, no ZipMap);
* a small torch CNN on the 8x8 digit images, 3 channels (the gray channel replicated; pixels scaled to
  [0, 1]), returning logits, exported to TorchScript (traced + frozen), ONNX (dynamo, weights inline, dynamic
  batch) and ``.pt2`` (torch.export, dynamic batch).

Seeded and trained on one thread: the same files every time on a given machine. ``shared_digits_models``
builds them once per test session (into a session temporary folder) for every module that asks.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from deploybench.targets.catalog import sha256_file
from deploybench.targets.predictors import quiet_jit_deprecation

CNN_EPOCHS = 80


@dataclass(frozen=True)
class DigitsModels:
    folder: Path
    rf_joblib: Path
    rf_onnx: Path
    cnn_torchscript: Path
    cnn_onnx: Path
    cnn_pt2: Path
    rf_joblib_sha256: str
    rows: np.ndarray  # float32 (20, 64): digit rows (pixel values 0..16)
    labels: np.ndarray  # their digits
    images: tuple[bytes, ...]  # the same digits as 8x8 RGB PNGs (gray replicated)


def digit_png(image_0_16: np.ndarray) -> bytes:
    """An 8x8 digit (values 0..16) as an RGB PNG whose pixels / 255 are the CNN's [0, 1] inputs."""
    gray = np.round(np.asarray(image_0_16, dtype=np.float64) * 255.0 / 16.0).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(np.stack([gray] * 3, axis=-1), "RGB").save(buf, format="PNG")
    return buf.getvalue()


def build_digits_models(folder: Path) -> DigitsModels:
    import joblib  # import cost: the model libraries, only when the files are built
    import torch
    from skl2onnx import to_onnx
    from skl2onnx.common.data_types import FloatTensorType
    from sklearn.datasets import load_digits
    from sklearn.ensemble import RandomForestClassifier

    folder.mkdir(parents=True, exist_ok=True)
    digits = load_digits()
    x = digits.data.astype(np.float32)
    y = digits.target.astype(np.int64)

    rf = RandomForestClassifier(n_estimators=30, random_state=0).fit(x, y)
    rf_joblib, rf_onnx = folder / "digits-rf.joblib", folder / "digits-rf.onnx"
    joblib.dump(rf, rf_joblib)
    onx = to_onnx(
        rf, initial_types=[("input", FloatTensorType([None, 64]))], options={id(rf): {"zipmap": False}}
    )
    rf_onnx.write_bytes(onx.SerializeToString())

    class DigitsCNN(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 8, kernel_size=3, padding=1)
            self.fc = torch.nn.Linear(8 * 4 * 4, 10)

        def forward(self, images: torch.Tensor) -> torch.Tensor:
            h = torch.nn.functional.max_pool2d(torch.relu(self.conv(images)), 2)
            return self.fc(h.flatten(1))  # logits: the target applies the softmax

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(0)
        net = DigitsCNN()
        images = torch.from_numpy((digits.images / 16.0).astype(np.float32)).unsqueeze(1).repeat(1, 3, 1, 1)
        targets = torch.from_numpy(y)
        opt = torch.optim.Adam(net.parameters(), lr=0.01)
        for _ in range(CNN_EPOCHS):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(net(images), targets).backward()
            opt.step()
        net.eval()
        with torch.no_grad():
            accuracy = float((net(images).argmax(dim=1) == targets).float().mean())
        assert accuracy > 0.8, f"the digits CNN did not train ({accuracy:.2f})"
        example = images[:2]  # a batch of 2: the batch axis stays dynamic
        cnn_ts, cnn_onnx, cnn_pt2 = (
            folder / "digits-cnn.pt",
            folder / "digits-cnn.onnx",
            folder / "digits-cnn.pt2",
        )
        with quiet_jit_deprecation(), torch.no_grad():
            torch.jit.save(torch.jit.freeze(torch.jit.trace(net, example).eval()), str(cnn_ts))
        batch = torch.export.Dim("batch")
        torch.onnx.export(
            net, (example,), cnn_onnx, dynamo=True, external_data=False, input_names=["input"],
            output_names=["logits"], dynamic_shapes=({0: batch},), verbose=False,
        )  # fmt: skip
        torch.export.save(torch.export.export(net, (example,), dynamic_shapes=({0: batch},)), cnn_pt2)
    finally:
        torch.set_num_threads(threads)

    pick = np.arange(0, 200, 10)
    return DigitsModels(
        folder=folder,
        rf_joblib=rf_joblib,
        rf_onnx=rf_onnx,
        cnn_torchscript=cnn_ts,
        cnn_onnx=cnn_onnx,
        cnn_pt2=cnn_pt2,
        rf_joblib_sha256=sha256_file(rf_joblib),
        rows=x[pick],
        labels=y[pick],
        images=tuple(digit_png(img) for img in digits.images[pick]),
    )


_BUILT: list[DigitsModels] = []


def shared_digits_models(tmp_path_factory: pytest.TempPathFactory) -> DigitsModels:
    """The digits models, built on first use in this test session and shared by every test module."""
    if not _BUILT:
        _BUILT.append(build_digits_models(tmp_path_factory.mktemp("user-models")))
    return _BUILT[0]
