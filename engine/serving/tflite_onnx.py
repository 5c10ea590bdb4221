"""A TensorFlow Lite to ONNX converter for the float convolutional models posescore serves.

It reads the ``.tflite`` flatbuffer with the ``tflite`` parser package and writes an ONNX graph with
``onnx``'s helpers (opset 17), one ONNX node or a few per TFLite operator. Tensors of rank 4 are
NHWC in TFLite and NCHW in the ONNX graph (transposed at the inputs and outputs, and around a
RESHAPE), so that onnxruntime's and TensorRT's convolution kernels run in their own layout. The
batch dimension is dynamic. fp16 weights (DEQUANTIZE of a constant) are folded to fp32.

Operators: CONV_2D, DEPTHWISE_CONV_2D, ADD, PAD, MAX_POOL_2D, AVERAGE_POOL_2D, RESIZE_BILINEAR,
RESHAPE, LOGISTIC, DEQUANTIZE (of constants), with fused NONE / RELU / RELU6 / RELU_N1_TO_1
activations: what BlazePose GHUM's landmark model uses. Anything else raises
:class:`ConversionError` naming the operator. Written because tflite2onnx 0.4.1 fails on this
model's PAD and tf2onnx needs TensorFlow.
"""

from __future__ import annotations

import numpy as np

CONVERTER = "posescore.engine.serving.tflite_onnx"
OPSET = 17


class ConversionError(ValueError):
    """The TFLite model uses something this converter does not translate."""


def _dtype(code: int):
    import tflite

    types = {tflite.TensorType.FLOAT32: np.float32, tflite.TensorType.FLOAT16: np.float16,
             tflite.TensorType.INT32: np.int32, tflite.TensorType.INT64: np.int64, tflite.TensorType.UINT8: np.uint8,
             tflite.TensorType.INT8: np.int8}
    if code not in types:
        raise ConversionError(f"tensor type {code} is not supported")
    return types[code]


def _same_pads(size: int, kernel: int, stride: int, dilation: int = 1) -> tuple[int, int]:
    """TensorFlow's SAME padding of one spatial axis: (begin, end)."""
    effective = (kernel - 1) * dilation + 1
    out = -(-size // stride)
    total = max((out - 1) * stride + effective - size, 0)
    return total // 2, total - total // 2


def _needed(nodes: list, initializers: list, outputs: list[str]) -> tuple[list, list]:
    """The nodes (in order) and initializers the ``outputs`` depend on: the branches of outputs
    left out (the segmentation mask's upsampling) are not computed."""
    wanted, kept = set(outputs), []
    for node in reversed(nodes):
        if wanted.intersection(node.output):
            kept.append(node)
            wanted.update(name for name in node.input if name)
    return kept[::-1], [init for init in initializers if init.name in wanted]


def convert(tflite_bytes: bytes, *, outputs: list[str] | None = None, graph_name: str = "model"):
    """An ``onnx.ModelProto`` computing the TFLite model's subgraph 0; ``outputs`` (TFLite tensor
    names) keeps only those outputs, in that order (default: all). Rank-4 inputs and outputs stay
    NHWC as in TFLite; the batch dimension is named ``batch`` and dynamic."""
    import onnx
    import tflite
    from onnx import TensorProto, helper, numpy_helper

    model = tflite.Model.GetRootAsModel(tflite_bytes, 0)
    graph = model.Subgraphs(0)
    op_names = {v: k for k, v in tflite.BuiltinOperator.__dict__.items() if not k.startswith("_")}
    nodes, initializers = [], []
    constants: dict[int, np.ndarray] = {}
    names: dict[int, str] = {}   # tensor index -> ONNX value name
    counter = [0]

    def fresh(prefix: str) -> str:
        counter[0] += 1
        return f"{prefix}_{counter[0]}"

    def tensor(index: int):
        return graph.Tensors(index)

    def shape(index: int) -> list[int]:
        t = tensor(index)
        return [int(d) for d in t.ShapeAsNumpy()] if t.ShapeLength() else []

    def constant_value(index: int) -> np.ndarray | None:
        if index in constants:
            return constants[index]
        t = tensor(index)
        data = model.Buffers(t.Buffer()).DataAsNumpy()
        if isinstance(data, int) or data.size == 0:
            return None
        value = np.frombuffer(data.tobytes(), dtype=_dtype(t.Type())).reshape(shape(index))
        constants[index] = value
        return value

    def const(value: np.ndarray, prefix: str = "const") -> str:
        name = fresh(prefix)
        initializers.append(numpy_helper.from_array(np.ascontiguousarray(value), name))
        return name

    def value_of(index: int) -> str:
        if index in names:
            return names[index]
        value = constant_value(index)
        if value is None:
            raise ConversionError(f"tensor {tensor(index).Name().decode()!r} is used before it is computed")
        names[index] = const(value.astype(np.float32) if value.dtype == np.float16 else value)
        return names[index]

    def activation(name: str, code: int, out_name: str) -> None:
        act = tflite.ActivationFunctionType
        if code == act.NONE:
            nodes.append(helper.make_node("Identity", [name], [out_name]))
        elif code == act.RELU:
            nodes.append(helper.make_node("Relu", [name], [out_name]))
        elif code == act.RELU6:
            nodes.append(helper.make_node("Clip", [name, const(np.float32(0)), const(np.float32(6))], [out_name]))
        elif code == act.RELU_N1_TO_1:
            nodes.append(helper.make_node("Clip", [name, const(np.float32(-1)), const(np.float32(1))], [out_name]))
        else:
            raise ConversionError(f"fused activation {code} is not supported")

    def options(op, cls):
        table = op.BuiltinOptions()
        opts = cls()
        opts.Init(table.Bytes, table.Pos)
        return opts

    def spatial_pads(in_index: int, kernel: tuple[int, int], stride: tuple[int, int], padding: int,
                     dilation: tuple[int, int] = (1, 1)) -> list[int]:
        if padding == tflite.Padding.VALID:
            return [0, 0, 0, 0]
        _, height, width, _ = shape(in_index)
        (hb, he), (wb, we) = (_same_pads(height, kernel[0], stride[0], dilation[0]),
                              _same_pads(width, kernel[1], stride[1], dilation[1]))
        return [hb, wb, he, we]

    # Inputs: NHWC given, NCHW inside.
    graph_inputs = []
    for i in range(graph.InputsLength()):
        index = graph.Inputs(i)
        dims = shape(index)
        name = tensor(index).Name().decode()
        graph_inputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, ["batch", *dims[1:]]))
        if len(dims) == 4:
            names[index] = fresh("nchw")
            nodes.append(helper.make_node("Transpose", [name], [names[index]], perm=[0, 3, 1, 2]))
        else:
            names[index] = name

    for i in range(graph.OperatorsLength()):
        op = graph.Operators(i)
        code = model.OperatorCodes(op.OpcodeIndex())
        kind = op_names.get(max(code.BuiltinCode(), code.DeprecatedBuiltinCode()), "CUSTOM")
        ins = [op.Inputs(j) for j in range(op.InputsLength())]
        out = op.Outputs(0)
        out_name = fresh(kind.lower())
        if kind == "DEQUANTIZE":
            value = constant_value(ins[0])
            if value is None:
                raise ConversionError("DEQUANTIZE of a computed tensor is not supported")
            constants[out] = value.astype(np.float32)
            continue
        if kind in ("CONV_2D", "DEPTHWISE_CONV_2D"):
            depthwise = kind == "DEPTHWISE_CONV_2D"
            opts = options(op, tflite.DepthwiseConv2DOptions if depthwise else tflite.Conv2DOptions)
            weights = constant_value(ins[1])
            if weights is None:
                raise ConversionError(f"{kind} with computed weights is not supported")
            weights = np.asarray(weights, np.float32)
            # TFLite's [out, kh, kw, in] (depthwise: [1, kh, kw, in * multiplier]) to ONNX's [out, in / group, kh, kw].
            kh, kw = weights.shape[1:3]
            group = shape(ins[0])[3] if depthwise else 1
            if depthwise and weights.shape[3] % group:
                raise ConversionError("DEPTHWISE_CONV_2D: output channels not a multiple of the input's")
            stride, dilation = (opts.StrideH(), opts.StrideW()), (opts.DilationHFactor(), opts.DilationWFactor())
            inputs = [value_of(ins[0]), const(weights.transpose((3, 0, 1, 2) if depthwise else (0, 3, 1, 2)), "w")]
            if len(ins) > 2 and ins[2] >= 0:
                inputs.append(const(np.asarray(constant_value(ins[2]), np.float32), "b"))
            conv = fresh("conv")
            nodes.append(helper.make_node("Conv", inputs, [conv], kernel_shape=[kh, kw], strides=list(stride),
                                          dilations=list(dilation), group=group,
                                          pads=spatial_pads(ins[0], (kh, kw), stride, opts.Padding(), dilation)))
            activation(conv, opts.FusedActivationFunction(), out_name)
        elif kind == "ADD":
            opts = options(op, tflite.AddOptions)
            add = fresh("add")
            nodes.append(helper.make_node("Add", [value_of(ins[0]), value_of(ins[1])], [add]))
            activation(add, opts.FusedActivationFunction(), out_name)
        elif kind == "PAD":
            paddings = np.asarray(constant_value(ins[1]), np.int64)  # [[n0, n1], [h0, h1], [w0, w1], [c0, c1]]
            if paddings.shape == (4, 2):
                paddings = paddings[[0, 3, 1, 2]]  # NCHW
            nodes.append(helper.make_node("Pad", [value_of(ins[0]), const(np.concatenate([paddings[:, 0],
                                                                                        paddings[:, 1]]))],
                                          [out_name], mode="constant"))
        elif kind in ("MAX_POOL_2D", "AVERAGE_POOL_2D"):
            opts = options(op, tflite.Pool2DOptions)
            kernel, stride = (opts.FilterHeight(), opts.FilterWidth()), (opts.StrideH(), opts.StrideW())
            pool = fresh("pool")
            attrs = {"kernel_shape": list(kernel), "strides": list(stride),
                     "pads": spatial_pads(ins[0], kernel, stride, opts.Padding())}
            if kind == "AVERAGE_POOL_2D":
                attrs["count_include_pad"] = 0
            nodes.append(helper.make_node("MaxPool" if kind == "MAX_POOL_2D" else "AveragePool",
                                          [value_of(ins[0])], [pool], **attrs))
            activation(pool, opts.FusedActivationFunction(), out_name)
        elif kind == "RESIZE_BILINEAR":
            opts = options(op, tflite.ResizeBilinearOptions)
            height, width = (int(v) for v in constant_value(ins[1]))
            mode = ("align_corners" if opts.AlignCorners() else "half_pixel" if opts.HalfPixelCenters()
                    else "asymmetric")
            sizes = fresh("sizes")
            in_shape = fresh("shape")
            nodes.append(helper.make_node("Shape", [value_of(ins[0])], [in_shape], end=2))
            nodes.append(helper.make_node("Concat", [in_shape, const(np.array([height, width], np.int64))], [sizes],
                                          axis=0))
            nodes.append(helper.make_node("Resize", [value_of(ins[0]), "", "", sizes], [out_name], mode="linear",
                                          coordinate_transformation_mode=mode))
        elif kind == "RESHAPE":
            target = [int(v) for v in (constant_value(ins[1]) if len(ins) > 1 else shape(out))]
            source = value_of(ins[0])
            if len(shape(ins[0])) == 4:  # back to TFLite's NHWC order before its reshape
                nhwc = fresh("nhwc")
                nodes.append(helper.make_node("Transpose", [source], [nhwc], perm=[0, 2, 3, 1]))
                source = nhwc
            target[0] = -1 if target and target[0] == 1 else target[0]
            reshaped = fresh("reshaped") if len(target) == 4 else out_name
            nodes.append(helper.make_node("Reshape", [source, const(np.array(target, np.int64))], [reshaped]))
            if len(target) == 4:
                nodes.append(helper.make_node("Transpose", [reshaped], [out_name], perm=[0, 3, 1, 2]))
        elif kind == "LOGISTIC":
            nodes.append(helper.make_node("Sigmoid", [value_of(ins[0])], [out_name]))
        else:
            raise ConversionError(f"the TFLite operator {kind} is not supported by {CONVERTER}")
        names[out] = out_name

    by_name = {tensor(graph.Outputs(i)).Name().decode(): graph.Outputs(i) for i in range(graph.OutputsLength())}
    wanted = outputs or list(by_name)
    graph_outputs = []
    for name in wanted:
        if name not in by_name:
            raise ConversionError(f"the model has no output {name!r}; it has {sorted(by_name)}")
        index = by_name[name]
        dims = shape(index)
        if len(dims) == 4:
            nodes.append(helper.make_node("Transpose", [names[index]], [name], perm=[0, 2, 3, 1]))
        else:
            nodes.append(helper.make_node("Identity", [names[index]], [name]))
        graph_outputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, ["batch", *dims[1:]]))

    nodes, initializers = _needed(nodes, initializers, [o.name for o in graph_outputs])
    onnx_graph = helper.make_graph(nodes, graph_name, graph_inputs, graph_outputs, initializers)
    result = helper.make_model(onnx_graph, opset_imports=[helper.make_opsetid("", OPSET)],
                               producer_name=CONVERTER)
    result.ir_version = 8
    onnx.checker.check_model(result)
    return result
