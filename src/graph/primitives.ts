/**
 * Every op the typed methods of GraphBuilder emit. `gradients.ts` keys its rule table by this
 * union, so adding an op here without a gradient rule (or a non-differentiable mark) fails to
 * compile. `emit` still takes any op string; such ops have no rule and autodiff names them.
 */
export type PrimitiveOp =
  // element-wise
  | 'Identity'
  | 'Add'
  | 'Sub'
  | 'Mul'
  | 'Div'
  | 'Max'
  | 'Pow'
  | 'Neg'
  | 'Erf'
  | 'Sqrt'
  | 'Exp'
  | 'Log'
  | 'Cos'
  | 'Sin'
  | 'Where'
  | 'Cast'
  | 'Sum'
  // linear algebra, reductions, normalisation
  | 'MatMul'
  | 'ReduceSum'
  | 'ReduceMean'
  | 'ReduceL2'
  | 'ReduceMax'
  | 'Softmax'
  | 'LayerNormalization'
  // indexing
  | 'Gather'
  | 'GatherElements'
  | 'ScatterElements'
  // shape manipulation
  | 'Transpose'
  | 'Reshape'
  | 'Unsqueeze'
  | 'Squeeze'
  | 'Slice'
  | 'Pad'
  | 'Concat'
  | 'Expand'
  // non-differentiable: constants, shapes, comparisons
  | 'Constant'
  | 'Shape'
  | 'Size'
  | 'Range'
  | 'LessOrEqual'
  | 'Equal';
