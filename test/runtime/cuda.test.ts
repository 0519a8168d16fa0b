import assert from 'node:assert/strict';
import test from 'node:test';
import {
  CUDA_LIBRARIES,
  type CudaReadiness,
  cudaProblem,
  libraryPathWith,
  probeLibraries,
  shortNativeError,
} from '../../src/runtime/cuda.ts';

test('the dynamic loader is asked: libc loads (with its path), an absent soname is named', () => {
  const [libc, absent] = probeLibraries(['libc.so.6', 'libtokenformer-absent.so.1']);
  assert.equal(libc!.name, 'libc.so.6');
  assert.match(libc!.path ?? '', /libc\.so\.6/);
  assert.equal(absent!.path, null);
  assert.match(absent!.error ?? '', /libtokenformer-absent\.so\.1/);
});

function readiness(over: Partial<CudaReadiness>): CudaReadiness {
  return {
    providerDir: '/x',
    missingProviderFiles: [],
    libraries: [],
    missingLibraries: [],
    suggestedLibraryDirs: [],
    ready: true,
    ...over,
  };
}

test('what keeps CUDA away is one line: the provider first, then the libraries with the fix', (t) => {
  if (process.platform !== 'linux' || process.arch !== 'x64') {
    assert.match(cudaProblem(readiness({}))!, /Linux x64 only/);
    return t.skip('not Linux x64');
  }
  assert.equal(cudaProblem(readiness({})), undefined);
  const noProvider = cudaProblem(readiness({ missingProviderFiles: ['libonnxruntime_providers_cuda.so'] }))!;
  assert.match(noProvider, /not installed .*npm run setup:cuda/);
  const pip = cudaProblem(
    readiness({
      missingLibraries: ['libcublas.so.13', 'libcudnn.so.9'],
      suggestedLibraryDirs: ['/sp/nvidia/cu13/lib', '/sp/nvidia/cudnn/lib'],
    }),
  )!;
  assert.match(
    pip,
    /libcublas\.so\.13, libcudnn\.so\.9; export LD_LIBRARY_PATH=\/sp\/nvidia\/cu13\/lib:\/sp\/nvidia\/cudnn\/lib/,
  );
  const driver = cudaProblem(readiness({ missingLibraries: ['libcuda.so.1'] }))!;
  assert.match(driver, /NVIDIA driver/);
  for (const line of [noProvider, pip, driver]) assert.ok(!line.includes('\n'));
});

test('LD_LIBRARY_PATH: new folders go first, none twice; native errors shrink to one line', () => {
  const saved = process.env.LD_LIBRARY_PATH;
  process.env.LD_LIBRARY_PATH = '/a:/b';
  try {
    assert.equal(libraryPathWith(['/c', '/a']), '/c:/a:/b');
  } finally {
    if (saved === undefined) delete process.env.LD_LIBRARY_PATH;
    else process.env.LD_LIBRARY_PATH = saved;
  }
  const raw =
    '\n[ONNXRuntimeError] : 1 : FAIL : /onnxruntime_src/onnxruntime/core/providers/cuda/cuda_call.cc:129 ' +
    'CUDA failure 100: no CUDA-capable device is detected\nmore lines';
  assert.equal(
    shortNativeError(raw),
    '[ONNXRuntimeError] : 1 : FAIL : CUDA failure 100: no CUDA-capable device is detected',
  );
  assert.deepEqual(
    [...CUDA_LIBRARIES].sort(),
    [
      'libcublas.so.13',
      'libcublasLt.so.13',
      'libcuda.so.1',
      'libcudart.so.13',
      'libcudnn.so.9',
      'libcurand.so.10',
    ].sort(),
  );
});
