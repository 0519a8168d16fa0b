import { create, toBinary } from '@bufbuild/protobuf';
import {
  type AttributeProto,
  AttributeProto_AttributeType,
  AttributeProtoSchema,
  FunctionProtoSchema,
  GraphProtoSchema,
  ModelProtoSchema,
  type NodeProto,
  NodeProtoSchema,
  OperatorSetIdProtoSchema,
  StringStringEntryProtoSchema,
  type TensorProto,
  TensorProto_DataLocation,
  TensorProtoSchema,
  TensorShapeProto_DimensionSchema,
  TensorShapeProtoSchema,
  TypeProto_TensorSchema,
  TypeProtoSchema,
  type ValueInfoProto,
  ValueInfoProtoSchema,
} from 'onnx-buf';
import type { GraphBuilder } from './builder.ts';
import type { LocalFunction } from './functions.ts';
import { type Attr, DATA_TYPES, type NodeSpec, type TensorData, type Value } from './types.ts';

/** Opset of the default ONNX domain: 18 has axes-as-input reductions and LayerNormalization. */
export const ONNX_OPSET = 18;
/** IR version 8 is what opset 18 requires; older runtimes still load it. */
const IR_VERSION = 8n;

export interface SerializeOptions {
  graphName: string;
  docString?: string;
  metadata?: Record<string, string>;
  /**
   * Keep initializers outside the protobuf (needed past protobuf's 2 GiB cap): their bytes go,
   * 64-byte aligned, to `location` (a file name relative to the model) through `writeChunk`.
   */
  externalData?: { location: string; writeChunk: (bytes: Uint8Array, offset: number) => void };
}

function bytesOf(view: ArrayBufferView): Uint8Array<ArrayBuffer> {
  return new Uint8Array(view.buffer as ArrayBuffer, view.byteOffset, view.byteLength);
}

function tensorProto(name: string, t: TensorData): TensorProto {
  return create(TensorProtoSchema, {
    name,
    dataType: DATA_TYPES[t.dtype].onnx,
    dims: t.shape.map(BigInt),
    rawData: bytesOf(t.data),
  });
}

function attributeProto(name: string, a: Attr): AttributeProto {
  const T = AttributeProto_AttributeType;
  switch (a.type) {
    case 'int':
      return create(AttributeProtoSchema, { name, type: T.INT, i: BigInt(a.value) });
    case 'float':
      return create(AttributeProtoSchema, { name, type: T.FLOAT, f: a.value });
    case 'string':
      return create(AttributeProtoSchema, { name, type: T.STRING, s: new TextEncoder().encode(a.value) });
    case 'ints':
      return create(AttributeProtoSchema, { name, type: T.INTS, ints: a.value.map(BigInt) });
    case 'floats':
      return create(AttributeProtoSchema, { name, type: T.FLOATS, floats: [...a.value] });
    case 'tensor':
      return create(AttributeProtoSchema, { name, type: T.TENSOR, t: tensorProto('', a.value) });
    case 'ref':
      return create(AttributeProtoSchema, {
        name,
        type: a.refType === 'float' ? T.FLOAT : T.INT,
        refAttrName: a.value,
      });
  }
}

function nodeProto(n: NodeSpec): NodeProto {
  return create(NodeProtoSchema, {
    name: n.name,
    opType: n.op,
    domain: n.domain,
    input: [...n.inputs],
    output: [...n.outputs],
    attribute: Object.entries(n.attrs).map(([k, v]) => attributeProto(k, v)),
  });
}

function valueInfo(v: Value): ValueInfoProto {
  const dims = v.shape.map((d) =>
    create(
      TensorShapeProto_DimensionSchema,
      typeof d === 'number'
        ? { value: { case: 'dimValue', value: BigInt(d) } }
        : { value: { case: 'dimParam', value: d } },
    ),
  );
  return create(ValueInfoProtoSchema, {
    name: v.name,
    type: create(TypeProtoSchema, {
      value: {
        case: 'tensorType',
        value: create(TypeProto_TensorSchema, {
          elemType: DATA_TYPES[v.dtype].onnx,
          shape: create(TensorShapeProtoSchema, { dim: dims }),
        }),
      },
    }),
  });
}

function functionProto(fn: LocalFunction) {
  return create(FunctionProtoSchema, {
    name: fn.name,
    domain: fn.domain,
    input: fn.inputs.map((i) => i.name),
    output: [...fn.outputNames],
    attribute: [...fn.attributes],
    node: fn.nodes.map(nodeProto),
    opsetImport: [create(OperatorSetIdProtoSchema, { domain: '', version: BigInt(ONNX_OPSET) })],
    docString: fn.docString,
  });
}

/** Serializes a built graph into ONNX ModelProto bytes. */
export function serializeModel(g: GraphBuilder, opts: SerializeOptions): Uint8Array {
  let offset = 0;
  const initializers = g.initializers.map(({ value, data }) => {
    const ext = opts.externalData;
    if (!ext) return tensorProto(value.name, data);
    const bytes = bytesOf(data.data);
    ext.writeChunk(bytes, offset);
    const entry = (key: string, v: string) => create(StringStringEntryProtoSchema, { key, value: v });
    const proto = create(TensorProtoSchema, {
      name: value.name,
      dataType: DATA_TYPES[data.dtype].onnx,
      dims: data.shape.map(BigInt),
      dataLocation: TensorProto_DataLocation.EXTERNAL,
      externalData: [
        entry('location', ext.location),
        entry('offset', String(offset)),
        entry('length', String(bytes.byteLength)),
      ],
    });
    offset += Math.ceil(bytes.byteLength / 64) * 64;
    return proto;
  });
  // Function domains, and those of nodes calling a runtime's own kernels (e.g. com.microsoft).
  const domains = new Set([...g.functions.values()].map((f) => f.domain));
  for (const n of g.nodes) if (n.domain !== '') domains.add(n.domain);
  const model = create(ModelProtoSchema, {
    irVersion: IR_VERSION,
    producerName: 'tokenformer-serve',
    producerVersion: '0.1.0',
    docString: opts.docString ?? '',
    opsetImport: [
      create(OperatorSetIdProtoSchema, { domain: '', version: BigInt(ONNX_OPSET) }),
      ...[...domains].map((domain) => create(OperatorSetIdProtoSchema, { domain, version: 1n })),
    ],
    metadataProps: Object.entries(opts.metadata ?? {}).map(([key, value]) =>
      create(StringStringEntryProtoSchema, { key, value }),
    ),
    graph: create(GraphProtoSchema, {
      name: opts.graphName,
      node: g.nodes.map(nodeProto),
      initializer: initializers,
      input: g.inputs.map(valueInfo),
      output: g.outputs.map(valueInfo),
    }),
    functions: [...g.functions.values()].map(functionProto),
  });
  return toBinary(ModelProtoSchema, model);
}
