/**
 * The CUDA execution provider for onnxruntime-node 1.29.0, as published on the npm registry:
 * Microsoft's ONNX Runtime 1.29.0 Linux x64 GPU build (CUDA 13) repackaged for Unity. The same
 * three files onnxruntime-node's own installer takes from NuGet `Microsoft.ML.OnnxRuntime.Gpu.Linux`.
 * Hashes computed once from the published tarball; an install or bundle that sees other bytes stops.
 */
export const CUDA_PROVIDER_PACKAGE = {
  name: 'com.github.asus4.onnxruntime.linux-x64-gpu',
  version: '0.4.9',
  /** The onnxruntime-node (core) version these providers were built with: they must match. */
  onnxruntime: '1.29.0',
  /** npm's `dist.integrity` of the tarball. */
  integrity:
    'sha512-FopIhNE/Ng+v2X65wVc9clPCBCvhvA53Hxo2U0Kf5fGdVsC7iCA+mZ0KLWggcQAj7TIZ6pNidR4AC10g74Xo6w==',
  tarballBytes: 179_145_956,
  /** Folder of the libraries inside the tarball. */
  folder: 'package/Plugins/Linux/x64',
  files: {
    'libonnxruntime_providers_cuda.so': {
      bytes: 229_780_440,
      sha256: '56cf3254b118ad837ccc4ed8f6d1b23504bbf7ef91b34cbc0b289cb7f10b3037',
    },
    'libonnxruntime_providers_shared.so': {
      bytes: 14_632,
      sha256: 'c6a12593396095f5670160e284c35d1700b7708cf3037b7042e2a5200ccae772',
    },
    'libonnxruntime_providers_tensorrt.so': {
      bytes: 859_144,
      sha256: 'ef6071798a339038ad66c428fb1a809cf8e499bffc3b6870e4e8bc4f4c6a6320',
    },
  },
} as const;
