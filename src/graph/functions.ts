/**
 * Model-local functions (ONNX FunctionProto). A body is traced once with symbolic input shapes
 * for the FunctionProto (`defineFunction`), and again at each call site with the real shapes
 * (`Graph.call`), which checks the call and infers its outputs.
 */
import { fail } from '../util/errors.ts';
import { GraphBuilder } from './builder.ts';
import type { DataType, NodeSpec, Shape, Value } from './types.ts';

export interface FunctionInput {
  name: string;
  dtype: DataType;
  shape: Shape;
}

/** Returns a scalar float value for a function attribute (a reference inside the function). */
export type AttrReader = (name: string) => Value;

export interface LocalFunction {
  readonly domain: string;
  readonly name: string;
  readonly inputs: readonly FunctionInput[];
  readonly attributes: readonly string[];
  readonly body: (g: GraphBuilder, inputs: readonly Value[], attr: AttrReader) => Value[];
  /** The traced body: nodes over formal input names, and the output names. */
  readonly nodes: readonly NodeSpec[];
  readonly outputNames: readonly string[];
  readonly docString: string;
}

/** Defines a model-local function by tracing `body` once over symbolic inputs. */
export function defineFunction(spec: {
  domain: string;
  name: string;
  inputs: readonly FunctionInput[];
  attributes: readonly string[];
  docString?: string;
  body: (g: GraphBuilder, inputs: readonly Value[], attr: AttrReader) => Value[];
}): LocalFunction {
  const g = new GraphBuilder('function');
  const formal = spec.inputs.map((i) => g.input(i.name, i.dtype, i.shape));
  const outs = spec.body(g, formal, (a) => {
    if (!spec.attributes.includes(a)) fail('TF_ERR_GRAPH', `${spec.name}: undeclared attribute ${a}`);
    return g.attrRef(a);
  });
  return {
    domain: spec.domain,
    name: spec.name,
    inputs: spec.inputs,
    attributes: spec.attributes,
    body: spec.body,
    nodes: g.nodes,
    outputNames: outs.map((o) => o.name),
    docString: spec.docString ?? '',
  };
}
