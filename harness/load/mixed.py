"""Mixed traffic: the calls a reliability run sends, what each must get back, and how a load of them runs.

Every call has a *kind* (a valid PNG, a corrupt image, a v2 tensor with NaN, a call cancelled in
flight, ...) and a set of statuses that kind may end with. Each call ends in exactly one outcome:

    answered   OK, and the answer equals offline ONNX Runtime's on the same image
    rejected   refused with a status the kind expects (INVALID_ARGUMENT for a corrupt image, ...)
    cancelled  cancelled by the client on purpose (the kinds that test cancellation)
    expired    its deliberately tiny deadline passed (the kinds that test deadlines)
    refused    UNAVAILABLE (or CANCELLED) while the run stops the server on purpose
    wrong      OK, but not the answer offline ONNX Runtime gives: a routing or batching bug
    unexpected any other status: a bug
    lost       no answer at all within the safety deadline: a hung request

so that `sent == answered + rejected + cancelled + expired + refused + wrong + unexpected + lost`
holds by construction, and a healthy server shows zero of the last three.

The reliability runs (harness.reliability_runs) send it from separate load processes
(harness.load.generators), so that the load's CPU is not the server's and a client-side stall cannot
hide a server-side one.
"""
from __future__ import annotations

import asyncio
import io
import json
import random
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np
import onnxruntime as ort
from PIL import Image

from contracts.digit_format import DIGIT_SHAPE, pixels_from_uint8
from contracts.generated.digits.v1 import digits_pb2, digits_pb2_grpc
from contracts.generated.inference import grpc_service_pb2 as v2_pb
from contracts.generated.inference import grpc_service_pb2_grpc as v2_grpc
from contracts.images.preprocess import ImageLimits, decode_image, prepare_digit
from contracts.mnist_idx import load_mnist_test
from contracts.model_card import PROBABILITIES_OUTPUT, ModelCard

from ..hostile_images import BOMB_BUILDERS
from .spec import LoadResult, LoadSpec, MixedTraffic

MiB = 1024 * 1024
POOL_IMAGES = 128
# Served and offline probabilities differ by float rounding only (a batch of 64 is summed in another
# order than a batch of 1); a real mix-up of callers differs by far more.
PROBABILITY_RTOL, PROBABILITY_ATOL = 1e-4, 1e-5
OUTCOMES = ("answered", "rejected", "cancelled", "expired", "refused", "wrong", "unexpected", "lost")
FAILURES = ("wrong", "unexpected", "lost")
# What a grpc.aio client stream reports when one of its writes races the server's final status: the
# library replaces that status with this INTERNAL (grpc/grpc#36066). The server refuses streams only
# after reading what they sent (serve.api.grpc_calls), but gRPC core cutting off a stream as it closes cannot.
AIO_WRITE_RACE_DETAIL = "Internal error from Core"
AIO_WRITE_RACE = "INTERNAL (grpc.aio write race, grpc/grpc#36066)"
DIGITS_SERVICE = "digits.v1.DigitClassifier"
V2_SERVICE = "inference.GRPCInferenceService"


# ------------------------------------------------------------------------------- the kinds of call


@dataclass(frozen=True)
class Kind:
    name: str
    group: str  # "valid", "invalid", "fuzz" or "fault"
    expected: frozenset[str]  # statuses (besides OK) the kind may end with
    description: str


def _kind(name: str, group: str, expected: tuple[str, ...], description: str) -> Kind:
    return Kind(name, group, frozenset(expected), description)


KINDS: dict[str, Kind] = {k.name: k for k in (
    _kind("classify_raw", "valid", (), "digits API, 1-4 raw 28x28 MNIST-format images"),
    _kind("classify_png", "valid", (), "digits API, 1-2 PNG images (black ink on white, preprocessed by the server)"),
    _kind("v2_raw", "valid", (), "KServe v2 ModelInfer, 1-4 rows as raw_input_contents"),
    _kind("v2_contents", "valid", (), "KServe v2 ModelInfer, 1 row as typed fp32_contents"),
    _kind("stream", "valid", (), "ClassifyStream of 3-8 images, one of them corrupt (answered with an error in-stream)"),
    _kind("corrupt_image", "invalid", ("INVALID_ARGUMENT",), "PNG signature followed by garbage"),
    _kind("wrong_raw_size", "invalid", ("INVALID_ARGUMENT",), "raw pixels whose byte count is not height x width"),
    _kind("unknown_model", "invalid", ("NOT_FOUND",), "a model name the server does not have (both APIs)"),
    _kind("huge_model_name", "invalid", ("NOT_FOUND",), "a 64 KiB model name (the error detail must stay bounded)"),
    _kind("v2_bad_datatype", "invalid", ("INVALID_ARGUMENT",), "v2 tensor declared INT64 for an FP32 input"),
    _kind("v2_bad_shape", "invalid", ("INVALID_ARGUMENT",), "v2 tensor of the wrong rank or image size"),
    _kind("v2_wrong_byte_count", "invalid", ("INVALID_ARGUMENT",), "v2 raw bytes that do not fill the declared shape"),
    _kind("v2_nan", "invalid", ("INVALID_ARGUMENT",), "v2 tensor holding NaN or infinity"),
    _kind("bomb", "invalid", ("RESOURCE_EXHAUSTED",),
          "PNG/JPEG/BMP/GIF/TIFF/WebP header declaring up to 10^10 pixels in < 2 KB"),
    _kind("too_many_images", "invalid", ("RESOURCE_EXHAUSTED",), "one more image than the per-request limit"),
    _kind("oversized_message", "invalid", ("RESOURCE_EXHAUSTED",), "a message larger than the server's limit"),
    _kind("fuzz_image", "fuzz", ("INVALID_ARGUMENT", "RESOURCE_EXHAUSTED"),
          "random bytes, or a valid PNG with flipped, cut or spliced bytes"),
    _kind("fuzz_v2", "fuzz", ("INVALID_ARGUMENT", "RESOURCE_EXHAUSTED", "NOT_FOUND"),
          "v2 request with random datatypes, shapes (negative, zero, 2^62), byte counts and contents"),
    _kind("cancelled", "fault", ("CANCELLED",), "Classify cancelled by the client 0-5 ms after it starts"),
    _kind("deadline", "fault", ("DEADLINE_EXCEEDED",), "Classify with a 0.1-5 ms deadline"),
    _kind("stream_closed_early", "fault", ("CANCELLED",), "stream cancelled after its first answer"),
)}

SOAK_MIX = {
    "classify_raw": 20, "classify_png": 8, "v2_raw": 15, "v2_contents": 4, "stream": 4,
    "corrupt_image": 2, "wrong_raw_size": 2, "unknown_model": 2, "huge_model_name": 1, "v2_bad_datatype": 2,
    "v2_bad_shape": 2, "v2_wrong_byte_count": 2, "v2_nan": 2, "bomb": 2, "too_many_images": 1,
    "oversized_message": 1, "fuzz_image": 3, "fuzz_v2": 3,
    "cancelled": 4, "deadline": 4, "stream_closed_early": 3,
}
# Calls that are safe to replay on another replica, and whose answer is checkable: the fail-over mix.
VALID_MIX = {"classify_raw": 4, "classify_png": 1, "v2_raw": 3, "v2_contents": 1}


# ------------------------------------------------------------------------------- hostile payloads

def mutate(data: bytes, rng: random.Random) -> bytes:
    """Flip, cut or splice some bytes of `data` (a fuzzer's cheapest mutations)."""
    data = bytearray(data)
    choice = rng.randrange(4)
    if choice == 0:
        for _ in range(rng.randint(1, 8)):
            data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
    elif choice == 1:
        del data[rng.randrange(1, len(data)):]
    elif choice == 2:
        at = rng.randrange(len(data))
        data[at:at] = rng.randbytes(rng.randint(1, 64))
    else:
        return rng.randbytes(rng.randint(0, 512))
    return bytes(data)


# ------------------------------------------------------------------------------- offline answers


def encode_png(pixels_uint8: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels_uint8).save(buffer, format="PNG")
    return buffer.getvalue()


class References:
    """MNIST test digits, their PNGs, and what offline ONNX Runtime answers for each.

    Raw digits are classified as they are; the PNGs (black ink on white paper) through the same
    decoding and MNIST-format preprocessing the server documents, then the same ONNX file.
    """

    def __init__(self, model_path: Path, data_dir: Path, count: int = POOL_IMAGES) -> None:
        session = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
        card = ModelCard.from_metadata_props(session.get_modelmeta().custom_metadata_map)
        if card is None or not card.is_classifier:
            raise ValueError(f"{model_path} is not a digit classifier exported by `python -m export`")
        self.model_name = card.model_name
        self.input_name = card.input_name
        self.input_size = tuple(card.input_size or DIGIT_SHAPE)
        images, _ = load_mnist_test(data_dir)
        self.images = np.ascontiguousarray(images[:count])
        self.pixels = pixels_from_uint8(self.images, self.input_size)
        self.pngs = [encode_png(255 - image) for image in self.images]
        png_pixels = np.stack([prepare_digit(decode_image(data, ImageLimits()), already_mnist=False,
                                             input_size=self.input_size) for data in self.pngs])

        def probabilities(pixels: np.ndarray) -> np.ndarray:
            return session.run([PROBABILITIES_OUTPUT], {self.input_name: pixels})[0]

        self.raw_probabilities = probabilities(self.pixels)
        self.png_probabilities = probabilities(png_pixels)
        self.classes = self.raw_probabilities.shape[1]

    def __len__(self) -> int:
        return len(self.images)

    @staticmethod
    def agrees(served: np.ndarray, expected: np.ndarray) -> bool:
        """Same probabilities up to rounding, and the served digit is (one of) the most probable."""
        if served.shape != expected.shape or not np.allclose(served, expected, rtol=PROBABILITY_RTOL, atol=PROBABILITY_ATOL):
            return False
        return bool(expected[served.argmax()] >= expected.max() - PROBABILITY_ATOL)

    def prediction_agrees(self, prediction, expected: np.ndarray) -> bool:
        served = np.full(self.classes, np.nan, dtype=np.float32)
        for candidate in prediction.top_k:
            if 0 <= candidate.digit < self.classes:
                served[candidate.digit] = candidate.probability
        return prediction.digit == int(np.nanargmax(served)) and self.agrees(served, expected)


def raw_image(pixels_uint8: np.ndarray, already_mnist: bool = True) -> digits_pb2.Image:
    height, width = pixels_uint8.shape
    return digits_pb2.Image(raw=digits_pb2.RawPixels(
        pixels=pixels_uint8.tobytes(), height=height, width=width, already_mnist=already_mnist))


# ------------------------------------------------------------------------------- the load generator


ROUND_ROBIN_SERVICE_CONFIG = {
    "loadBalancingConfig": [{"round_robin": {}}],
    # Client-side health checking: a replica that reports NOT_SERVING (draining) gets no new calls.
    "healthCheckConfig": {"serviceName": ""},
    "methodConfig": [{
        "name": [{"service": DIGITS_SERVICE}, {"service": V2_SERVICE}],
        # While no connection is ready (the one worker a connection had died, and the reconnection
        # raced its listener closing), a call waits for one instead of failing at once.
        "waitForReady": True,
        # Classify and ModelInfer have no side effects: replaying one on another replica is safe.
        "retryPolicy": {
            "maxAttempts": 5,
            "initialBackoff": "0.05s",
            "maxBackoff": "0.5s",
            "backoffMultiplier": 2,
            "retryableStatusCodes": ["UNAVAILABLE"],
        },
    }],
}


def channel_options(traffic: MixedTraffic) -> list[tuple[str, object]]:
    # The client lets any size through: refusing oversized messages is the server's job here.
    options: list[tuple[str, object]] = [
        ("grpc.max_send_message_length", -1),
        ("grpc.max_receive_message_length", 64 * MiB),
    ]
    if traffic.round_robin:
        options += [("grpc.service_config", json.dumps(ROUND_ROBIN_SERVICE_CONFIG)), ("grpc.enable_retries", 1)]
    return options


class Traffic:
    """Makes calls of each kind and judges how they ended."""

    def __init__(self, spec: LoadSpec, references: References, channel: grpc.aio.Channel) -> None:
        self.spec = spec.traffic
        self.refs = references
        self.digits = digits_pb2_grpc.DigitClassifierStub(channel)
        self.v2 = v2_grpc.GRPCInferenceServiceStub(channel)
        self.timeout = spec.call_timeout_s
        self.model = references.model_name

    # How a call ended -------------------------------------------------------------------------

    def judge_error(self, kind: Kind, code: grpc.StatusCode) -> str:
        name = code.name
        if name in kind.expected:
            return {"CANCELLED": "cancelled", "DEADLINE_EXCEEDED": "expired"}.get(name, "rejected")
        if name in ("UNAVAILABLE", "CANCELLED") and self.spec.server_goes_away:
            return "refused"
        if name == "DEADLINE_EXCEEDED":
            return "lost"  # the safety deadline passed: the server never answered
        return "unexpected"

    async def stream_ended(self, kind: Kind, call):
        """A stream the server ended while this side still wrote or read: judge it by its final status.

        (A write racing the server's status fails with INTERNAL "Internal error from Core" or
        InvalidStateError in grpc.aio; the call's own code is the server's real answer.)
        """
        code, details = await call.code(), await call.details() or ""
        if code == grpc.StatusCode.OK:
            return "wrong", "OK", "the stream ended early with OK"
        if code == grpc.StatusCode.INTERNAL and details == AIO_WRITE_RACE_DETAIL:
            # The client library hid the server's status: acceptable only when the server was going away.
            return ("refused" if self.spec.server_goes_away else "unexpected"), AIO_WRITE_RACE, details
        return self.judge_error(kind, code), code.name, details

    async def unary(self, kind: Kind, method, request, check, timeout: float | None = None):
        try:
            response = await method(request, timeout=timeout or self.timeout)
        except grpc.aio.AioRpcError as error:
            return self.judge_error(kind, error.code()), error.code().name, error.details() or ""
        return ("answered" if check(response) else "wrong"), "OK", ""

    # Checks of answers --------------------------------------------------------------------------

    def digits_check(self, indices: list[int], png: bool = False):
        expected = self.refs.png_probabilities if png else self.refs.raw_probabilities

        def check(response) -> bool:
            return len(response.predictions) == len(indices) and all(
                self.refs.prediction_agrees(p, expected[i]) for p, i in zip(response.predictions, indices))
        return check

    def v2_check(self, indices: list[int]):
        def check(response) -> bool:
            names = [output.name for output in response.outputs]
            if PROBABILITIES_OUTPUT not in names:
                return False
            at = names.index(PROBABILITIES_OUTPUT)
            output = response.outputs[at]
            if response.raw_output_contents:
                served = np.frombuffer(response.raw_output_contents[at], "<f4")
            else:
                served = np.asarray(output.contents.fp32_contents, np.float32)
            if served.size != len(indices) * self.refs.classes:
                return False
            served = served.reshape(len(indices), self.refs.classes)
            return all(self.refs.agrees(row, self.refs.raw_probabilities[i]) for row, i in zip(served, indices))
        return check

    @staticmethod
    def well_formed(images: int):
        """A fuzzed request that happened to be valid: the answer must at least be a sane one."""
        def check(response) -> bool:
            return len(response.predictions) == images and all(
                0 <= p.digit <= 9 and 0.0 <= p.probability <= 1.0 for p in response.predictions)
        return check

    # Requests -----------------------------------------------------------------------------------

    def pick(self, rng: random.Random, count: int) -> list[int]:
        return [rng.randrange(len(self.refs)) for _ in range(count)]

    def classify_request(self, indices: list[int], png: bool = False, **fields) -> digits_pb2.ClassifyRequest:
        if png:
            images = [digits_pb2.Image(encoded=self.refs.pngs[i]) for i in indices]
        else:
            images = [raw_image(self.refs.images[i]) for i in indices]
        fields.setdefault("model", self.model)
        return digits_pb2.ClassifyRequest(images=images, top_k=self.refs.classes, **fields)

    def v2_tensor(self, shape, datatype: str = "FP32", name: str | None = None, **fields):
        return v2_pb.ModelInferRequest.InferInputTensor(
            name=name or self.refs.input_name, datatype=datatype, shape=list(shape), **fields)

    def v2_request(self, pixels: np.ndarray, datatype: str = "FP32", **fields) -> v2_pb.ModelInferRequest:
        fields.setdefault("model_name", self.model)
        return v2_pb.ModelInferRequest(inputs=[self.v2_tensor(pixels.shape, datatype)],
                                       raw_input_contents=[np.ascontiguousarray(pixels, "<f4").tobytes()], **fields)

    # One call of each kind: returns (outcome, code, detail) ------------------------------------

    async def call(self, kind: Kind, rng: random.Random):
        return await getattr(self, f"_{kind.name}")(kind, rng)

    async def _classify_raw(self, kind, rng):
        indices = self.pick(rng, rng.randint(1, 4))
        return await self.unary(kind, self.digits.Classify, self.classify_request(indices), self.digits_check(indices))

    async def _classify_png(self, kind, rng):
        indices = self.pick(rng, rng.randint(1, 2))
        request = self.classify_request(indices, png=True)
        return await self.unary(kind, self.digits.Classify, request, self.digits_check(indices, png=True))

    async def _v2_raw(self, kind, rng):
        indices = self.pick(rng, rng.randint(1, 4))
        request = self.v2_request(self.refs.pixels[indices], id=str(rng.random()))
        return await self.unary(kind, self.v2.ModelInfer, request, self.v2_check(indices))

    async def _v2_contents(self, kind, rng):
        indices = self.pick(rng, 1)
        pixels = self.refs.pixels[indices]
        tensor = self.v2_tensor(pixels.shape, contents=v2_pb.InferTensorContents(fp32_contents=pixels.ravel().tolist()))
        request = v2_pb.ModelInferRequest(model_name=self.model, inputs=[tensor])
        return await self.unary(kind, self.v2.ModelInfer, request, self.v2_check(indices))

    async def _stream(self, kind, rng):
        count = rng.randint(3, 8)
        indices = self.pick(rng, count)
        corrupt_at = rng.randrange(count)
        call = self.digits.ClassifyStream(timeout=self.timeout)
        try:
            for position, index in enumerate(indices):
                image = (digits_pb2.Image(encoded=b"\x89PNG\r\n\x1a\n" + rng.randbytes(32)) if position == corrupt_at
                         else raw_image(self.refs.images[index]))
                await call.write(digits_pb2.ClassifyStreamRequest(id=str(position), model=self.model, image=image,
                                                                  top_k=self.refs.classes))
            await call.done_writing()
            answers = [answer async for answer in call]
        except (grpc.aio.AioRpcError, asyncio.InvalidStateError):
            return await self.stream_ended(kind, call)
        right = len(answers) == count and all(
            answer.id == str(position) and (
                answer.WhichOneof("result") == "error" and answer.error.code == "INVALID_ARGUMENT"
                if position == corrupt_at
                else answer.WhichOneof("result") == "prediction"
                and self.refs.prediction_agrees(answer.prediction, self.refs.raw_probabilities[index]))
            for position, (answer, index) in enumerate(zip(answers, indices)))
        return ("answered" if right else "wrong"), "OK", ""

    async def _corrupt_image(self, kind, rng):
        request = digits_pb2.ClassifyRequest(
            model=self.model, images=[digits_pb2.Image(encoded=b"\x89PNG\r\n\x1a\n" + rng.randbytes(rng.randint(0, 200)))])
        return await self.unary(kind, self.digits.Classify, request, lambda r: False)

    async def _wrong_raw_size(self, kind, rng):
        height, width = rng.randint(1, 64), rng.randint(1, 64)
        size = height * width + rng.choice([-1, 1, 7, -height])
        image = digits_pb2.Image(raw=digits_pb2.RawPixels(pixels=bytes(max(size, 0)), height=height, width=width))
        request = digits_pb2.ClassifyRequest(model=self.model, images=[image])
        return await self.unary(kind, self.digits.Classify, request, lambda r: False)

    async def _unknown_model(self, kind, rng):
        name = f"no-such-model-{rng.randrange(1000)}"
        if rng.random() < 0.5:
            request = self.classify_request(self.pick(rng, 1), model=name)
            return await self.unary(kind, self.digits.Classify, request, lambda r: False)
        return await self.unary(kind, self.v2.ModelInfer, self.v2_request(self.refs.pixels[:1], model_name=name),
                                lambda r: False)

    async def _huge_model_name(self, kind, rng):
        request = self.classify_request(self.pick(rng, 1), model="m" * (64 * 1024))
        return await self.unary(kind, self.digits.Classify, request, lambda r: False)

    async def _v2_bad_datatype(self, kind, rng):
        pixels = self.refs.pixels[:1]
        datatype = rng.choice(["INT64", "FP64", "FP16", "UINT8", "BYTES", "", "float32"])
        request = self.v2_request(pixels, datatype=datatype)
        return await self.unary(kind, self.v2.ModelInfer, request, lambda r: False)

    async def _v2_bad_shape(self, kind, rng):
        h, w = self.refs.input_size
        shape = rng.choice([[1, h * w], [1, 1, h + 4, w + 4], [1, 3, h, w], [h, w], [1, 1, h, w, 1]])
        count = int(np.prod(shape))
        request = v2_pb.ModelInferRequest(model_name=self.model, inputs=[self.v2_tensor(shape)],
                                          raw_input_contents=[bytes(4 * count)])
        return await self.unary(kind, self.v2.ModelInfer, request, lambda r: False)

    async def _v2_wrong_byte_count(self, kind, rng):
        raw = np.ascontiguousarray(self.refs.pixels[:2], "<f4").tobytes()
        cut = rng.choice([1, 4, len(raw) // 2, -4])
        raw = raw[:-cut] if cut > 0 else raw + bytes(-cut)
        request = v2_pb.ModelInferRequest(model_name=self.model, inputs=[self.v2_tensor(self.refs.pixels[:2].shape)],
                                          raw_input_contents=[raw])
        return await self.unary(kind, self.v2.ModelInfer, request, lambda r: False)

    async def _v2_nan(self, kind, rng):
        pixels = self.refs.pixels[self.pick(rng, 2)].copy()
        pixels.reshape(-1)[rng.randrange(pixels.size)] = rng.choice([np.nan, np.inf, -np.inf])
        return await self.unary(kind, self.v2.ModelInfer, self.v2_request(pixels), lambda r: False)

    async def _bomb(self, kind, rng):
        build = rng.choice(list(BOMB_BUILDERS))
        side = min(rng.choice([20_000, 65_535, 100_000]), BOMB_BUILDERS[build])  # within what its header can say
        data = build(side, side)
        request = digits_pb2.ClassifyRequest(model=self.model, images=[digits_pb2.Image(encoded=data)])
        return await self.unary(kind, self.digits.Classify, request, lambda r: False)

    async def _too_many_images(self, kind, rng):
        image = raw_image(self.refs.images[0])
        request = digits_pb2.ClassifyRequest(model=self.model, images=[image] * (self.spec.max_images_per_request + 1))
        return await self.unary(kind, self.digits.Classify, request, lambda r: False)

    async def _oversized_message(self, kind, rng):
        raw = bytes(self.spec.max_message_bytes + rng.randint(1, 64 * 1024))
        request = v2_pb.ModelInferRequest(model_name=self.model, inputs=[self.v2_tensor([1, 1, 1, len(raw) // 4])],
                                          raw_input_contents=[raw])
        return await self.unary(kind, self.v2.ModelInfer, request, lambda r: False)

    async def _fuzz_image(self, kind, rng):
        if rng.random() < 0.2:
            data = rng.randbytes(rng.randint(0, 256))
        else:
            data = mutate(self.refs.pngs[rng.randrange(len(self.refs))], rng)
        request = digits_pb2.ClassifyRequest(model=self.model, images=[digits_pb2.Image(encoded=data)])
        return await self.unary(kind, self.digits.Classify, request, self.well_formed(1))

    async def _fuzz_v2(self, kind, rng):
        request = random_v2_request(rng, self.model, self.refs.input_name, self.refs.input_size)
        return await self.unary(kind, self.v2.ModelInfer, request, lambda response: len(response.outputs) >= 1)

    async def _cancelled(self, kind, rng):
        indices = self.pick(rng, rng.randint(1, 8))
        call = self.digits.Classify(self.classify_request(indices), timeout=self.timeout)
        await asyncio.sleep(rng.uniform(0, 0.005))
        call.cancel()
        try:
            response = await call
        except asyncio.CancelledError:
            return "cancelled", "CANCELLED", ""
        except grpc.aio.AioRpcError as error:
            return self.judge_error(kind, error.code()), error.code().name, error.details() or ""
        # It was answered before the cancellation: the answer must still be right.
        return ("answered" if self.digits_check(indices)(response) else "wrong"), "OK", ""

    async def _deadline(self, kind, rng):
        indices = self.pick(rng, rng.randint(1, 8))
        timeout = rng.uniform(0.0001, 0.005)
        return await self.unary(kind, self.digits.Classify, self.classify_request(indices), self.digits_check(indices),
                                timeout=timeout)

    async def _stream_closed_early(self, kind, rng):
        indices = self.pick(rng, rng.randint(4, 8))
        call = self.digits.ClassifyStream(timeout=self.timeout)
        try:
            for position, index in enumerate(indices):
                await call.write(digits_pb2.ClassifyStreamRequest(
                    id=str(position), model=self.model, image=raw_image(self.refs.images[index]), top_k=self.refs.classes))
            first = await call.read()
        except (grpc.aio.AioRpcError, asyncio.InvalidStateError):
            return await self.stream_ended(kind, call)
        call.cancel()  # the client goes away with answers still coming and its writes never closed
        if first is grpc.aio.EOF or first.id != "0" or not self.refs.prediction_agrees(
                first.prediction, self.refs.raw_probabilities[indices[0]]):
            return "wrong", "OK", "first streamed answer differs"
        return "cancelled", "CANCELLED", ""


def random_v2_request(rng: random.Random, model: str, input_name: str, input_size) -> v2_pb.ModelInferRequest:
    """A v2 request with random (mostly wrong, sometimes right) names, datatypes, shapes and data."""
    datatypes = ["FP32", "FP32", "FP32", "FP16", "FP64", "INT8", "INT32", "INT64", "UINT8", "UINT64", "BOOL", "BYTES",
                 "", "fp32", "COMPLEX"]
    dims = [-(2**62), -1, 0, 1, 2, 3, 28, 32, int(input_size[0]), 2**31, 2**62]
    rank = rng.choice([0, 1, 2, 3, 4, 4, 4, 5])
    shape = [rng.choice(dims) for _ in range(rank)]
    if rank == 4 and rng.random() < 0.5:
        shape = [rng.randint(1, 3), 1, int(input_size[0]), int(input_size[1])]
    name = input_name if rng.random() < 0.8 else rng.choice(["", "image", "x" * rng.randint(1, 300)])
    tensor = v2_pb.ModelInferRequest.InferInputTensor(name=name, datatype=rng.choice(datatypes), shape=shape)
    request = v2_pb.ModelInferRequest(model_name=model if rng.random() < 0.9 else "nope", inputs=[tensor])
    elements = int(np.prod(shape)) if all(0 <= d <= 4096 for d in shape) else rng.randint(0, 100)
    elements = min(max(elements, 0), 16_384)
    if rng.random() < 0.6:
        width = rng.choice([1, 2, 4, 8])
        count = elements * width + rng.choice([0, 0, 0, 1, -1])
        values = np.random.default_rng(rng.randrange(2**32)).random(max(count, 0) // 4 + 1, np.float32)
        request.raw_input_contents.append(values.tobytes()[: max(count, 0)])
        if rng.random() < 0.1:
            request.raw_input_contents.append(b"\0" * 4)  # more raw entries than inputs
    else:
        field_name = rng.choice(["fp32_contents", "int_contents", "int64_contents", "uint_contents",
                                 "bool_contents", "fp64_contents", "bytes_contents"])
        count = elements + rng.choice([0, 0, 1, -1])
        values = {
            "fp32_contents": lambda: [rng.choice([0.5, -1.0, 2.0, float("nan"), float("inf")]) for _ in range(count)],
            "fp64_contents": lambda: [rng.random() for _ in range(count)],
            "int_contents": lambda: [rng.randint(-(2**31), 2**31 - 1) for _ in range(count)],
            "int64_contents": lambda: [rng.randint(-(2**63), 2**63 - 1) for _ in range(count)],
            "uint_contents": lambda: [rng.randint(0, 2**32 - 1) for _ in range(count)],
            "bool_contents": lambda: [rng.random() < 0.5 for _ in range(count)],
            "bytes_contents": lambda: [rng.randbytes(4) for _ in range(count)],
        }[field_name]()
        getattr(tensor.contents, field_name).extend(values)
    return request


async def prepare(spec: LoadSpec, channels: dict):
    """Compute the offline answers and connect; returns `run(start_at)`, the load.

    `channels` (the process's channels kept between loads) goes unused: each mixed load has its own
    channel, with its own options (round_robin, retries), closed when the load ends.
    """
    traffic: MixedTraffic = spec.traffic
    references = References(Path(traffic.model_path), Path(traffic.data_dir))
    channel = grpc.aio.insecure_channel(spec.target, options=channel_options(traffic))
    try:
        await asyncio.wait_for(channel.channel_ready(), timeout=30)
    except asyncio.TimeoutError:
        await channel.close()
        raise ConnectionError(f"load generator {spec.worker}: cannot reach {spec.target} within 30 s") from None

    async def run(start_at: float) -> LoadResult:
        try:
            return await _load(spec, references, channel, start_at)
        finally:
            await channel.close()

    return run


async def _load(spec: LoadSpec, references: References, channel, start_at: float) -> LoadResult:
    traffic: MixedTraffic = spec.traffic
    result = LoadResult(worker=spec.worker)
    outcomes: dict[str, Counter] = defaultdict(Counter)
    codes: dict[str, Counter] = defaultdict(Counter)
    errors: Counter = Counter()
    latencies: list[float] = []
    kinds = [KINDS[name] for name in traffic.mix]
    weights = [traffic.mix[name] for name in traffic.mix]
    calls = Traffic(spec, references, channel)
    await asyncio.sleep(max(0.0, start_at - time.time()))
    result.started_at = time.time()
    stop_at = start_at + spec.duration_s

    async def caller(index: int) -> None:
        rng = random.Random(f"{traffic.seed}-{spec.worker}-{index}")
        while time.time() < stop_at:
            kind = rng.choices(kinds, weights)[0]
            started = time.time()
            result.sent += 1
            try:
                outcome, code, detail = await calls.call(kind, rng)
            except Exception as exc:  # a bug in this generator: counted apart, never hidden
                result.client_errors += 1
                outcome, code, detail = "unexpected", "CLIENT_ERROR", f"{type(exc).__name__}: {exc}"
            ended = time.time()
            outcomes[kind.name][outcome] += 1
            codes[kind.name][code] += 1
            if kind.group == "valid" and outcome == "answered":
                latencies.append(ended - started)
            if outcome in FAILURES:
                errors[code] += 1
                if len(result.failures) < 20:
                    result.failures.append({"kind": kind.name, "outcome": outcome, "code": code,
                                            "detail": detail[:300], "at": started})
            if spec.record_calls:
                result.calls.append((kind.name, started, ended, code, outcome))
            if outcome == "refused":
                await asyncio.sleep(0.05)  # the server is going or gone: do not spin

    cpu_started = time.process_time()
    callers = [asyncio.ensure_future(caller(i)) for i in range(spec.concurrency)]
    # Each call has a deadline, so the callers end by themselves; this bound is a last resort.
    done, pending = await asyncio.wait(callers, timeout=spec.duration_s + spec.call_timeout_s + 30)
    for task in pending:
        task.cancel()
        outcomes["(generator)"]["lost"] += 1
    for task in done:
        if task.exception() is not None:
            raise task.exception()
    result.cpu_s = time.process_time() - cpu_started
    result.ended_at = time.time()
    result.outcomes = {kind: dict(counts) for kind, counts in outcomes.items()}
    result.codes = {kind: dict(counts) for kind, counts in codes.items()}
    result.answered = sum(counts.get("answered", 0) for counts in outcomes.values())
    result.errors = dict(errors)
    result.latencies_s = np.asarray(latencies, dtype=np.float64)
    if result.failures:
        first = result.failures[0]
        result.first_error = f"{first['kind']}: {first['code']}: {first['detail']}"
    return result


def warm_up_imports() -> None:
    """Nothing left to import: this module's own imports (ONNX Runtime, Pillow, the stubs) are the warm-up."""
