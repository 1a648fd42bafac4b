"""The bundle's README.md: what each file is, running predict.py (a Raspberry Pi included), and using the
.tflite from an Android app. Its figures (size, channels, tensors, rule) come from preprocessing.json."""

from __future__ import annotations

README = """\
# {name} classifier: deployable INT8 bundle

| file | what it is |
|---|---|
| `model_int8.tflite` | the deployed INT8 model, for LiteRT (TensorFlow Lite): input {tflite_in} |
| `model_int8.onnx` | the same model for ONNX Runtime: input {onnx_in} |
| `labels.txt` | the {count} {kind}, one a line, in the order of the model's outputs |
| `preprocessing.json` | decoding, resizing, scaling, tensors, activation and decision rule (`steps` in words) |
| `predict.py` | a standalone runner: NumPy, Pillow and LiteRT only |
| `requirements.txt` | the runner's packages, pinned |
| `MODEL_CARD.md`, `model_card.html` | what the model is for and not for, its data, test figures and limits |

Read the model card before using the model: it is a research and teaching model, not a medical device.

## Run it with Python

```bash
python3 -m venv .venv
. .venv/bin/activate
pip install -r requirements.txt
python predict.py image1.png image2.jpg          # one line per image: the answer, then every probability
python predict.py image1.png image2.jpg --json   # the same as JSON
python predict.py image1.png --model model_int8.onnx   # ONNX Runtime instead (pip install onnxruntime)
```

Any image Pillow reads works: it is converted and resized exactly as the training images were
({size} × {size} px, {colour}).

### On a Raspberry Pi

Use a 64-bit Raspberry Pi OS (Raspberry Pi 3, 4, 5, Zero 2 W): ai-edge-litert is published for 64-bit ARM
(aarch64) only. The pinned versions need Python 3.11 or 3.12 (NumPy 1.26.4 has no wheel for newer Pythons):
Raspberry Pi OS Bookworm's `python3` is 3.11; on a release with a newer Python, install 3.11 or 3.12 first.

```bash
sudo apt install python3-venv          # if `python3 -m venv` is missing
scp -r bundle pi@raspberrypi.local:~/model     # from the computer that holds the bundle
ssh pi@raspberrypi.local
cd ~/model
python3 -m venv .venv && . .venv/bin/activate
pip install -r requirements.txt
python predict.py image.png
```

## Use the .tflite on Android

1. Copy `model_int8.tflite` to `app/src/main/assets/`. It must stay uncompressed to be memory-mapped: the
   Android Gradle Plugin leaves `.tflite` assets uncompressed by default since version 4.1.
2. Add LiteRT, the successor of TensorFlow Lite with the same `org.tensorflow.lite.Interpreter` API:
   `implementation("com.google.ai.edge.litert:litert:<version>")`.
3. Prepare the input as `preprocessing.json` says: {size} × {size} px, {colour}, each value
   `(pixel / 255 - mean[c]) / std[c]` with mean {mean} and std {std}, laid out NHWC, input tensor
   {tflite_in}.
4. Run it and apply the activation and the decision rule:

```kotlin
val fd = context.assets.openFd("model_int8.tflite")
val model = FileInputStream(fd.fileDescriptor).channel
    .map(FileChannel.MapMode.READ_ONLY, fd.startOffset, fd.declaredLength)
val interpreter = Interpreter(model)                        // org.tensorflow.lite.Interpreter
val input = ByteBuffer.allocateDirect(4 * {size} * {size} * {channels}).order(ByteOrder.nativeOrder())
// for each row y, column x, channel c: input.putFloat((pixel[y][x][c] / 255f - mean[c]) / std[c])
val logits = Array(1) {{ FloatArray({count}) }}
interpreter.run(input, logits)
// probabilities: {activation} of logits[0]; decision: {rule}
```

The output tensor is {tflite_out}. An integer input or output tensor (`quantization` not null in
`preprocessing.json`) takes `q = round(x / scale + zero_point)` and gives `(q - zero_point) * scale`.
Android's `Bitmap` scaling and grayscale conversion are not Pillow's: to get exactly the probabilities of
`predict.py`, resize with Pillow's bilinear filter (which widens its support when shrinking) and convert to
luma as `preprocessing.json` says, or feed images that are already {size} × {size} px.
"""


def _tensor(tensor: dict) -> str:
    quantization = tensor["quantization"]
    scale = "" if quantization is None else (f", scale {quantization['scale']:g}, "
                                             f"zero point {quantization['zero_point']}")
    return f"{tensor['layout']} {tensor['dtype']} {tensor['shape']}{scale}"


def readme(spec: dict, name: str) -> str:
    """README.md of a bundle whose preprocessing.json is `spec`."""
    tflite, onnx = spec["tensors"]["model_int8.tflite"], spec["tensors"]["model_int8.onnx"]
    rule = spec["decision"]
    decision = "argmax" if rule["rule"] == "argmax" else f"each label whose probability reaches {rule['threshold']}"
    return README.format(
        name=name, size=spec["image_size"], channels=spec["channels"], mean=spec["mean"], std=spec["std"],
        colour="grayscale, one channel" if spec["channels"] == 1 else "RGB, three channels",
        count=len(spec["classes"]), kind="labels" if spec["task"] == "multi-label" else "classes",
        activation=spec["activation"], rule=decision, tflite_in=_tensor(tflite["input"]),
        tflite_out=_tensor(tflite["output"]), onnx_in=_tensor(onnx["input"]))
