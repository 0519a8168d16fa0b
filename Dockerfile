# syntax=docker/dockerfile:1
# GPU serving image: CUDA 13 + cuDNN 9, onnxruntime-node with its CUDA execution provider (from npm).
#   docker build -t tokenformer:gpu .
#   docker run --rm --gpus all -p 8080:8080 tokenformer:gpu
# CPU-only image: Dockerfile.cpu. Kubernetes: deploy/kubernetes/.
#
# No JavaScript build: the image runs the TypeScript sources with tsx, as `npm run serve` does.
# tsc can rewrite `.ts` import specifiers (rewriteRelativeImportExtensions), but the engine and the
# trainer start their workers from `new URL('./worker.ts', import.meta.url)` and the playground
# reads playground.html beside its source; an emitted dist/ would break both. So `tsc --noEmit`
# gates the build, and the image holds exactly the sources that passed it.

ARG NODE_IMAGE=node:20-bookworm-slim
ARG CUDA_IMAGE=nvidia/cuda:13.0.2-cudnn-runtime-ubuntu24.04

# 1. Typecheck; the dev dependencies stay in this stage.
FROM ${NODE_IMAGE} AS check
WORKDIR /app
COPY package.json package-lock.json .npmrc ./
RUN ONNXRUNTIME_NODE_INSTALL=skip npm ci --no-audit --no-fund
COPY tsconfig.json ./
COPY src ./src
COPY scripts ./scripts
RUN npx tsc --noEmit -p tsconfig.json

# 2. Production dependencies with the CUDA provider, all from the npm registry: `npm ci` with
# onnxruntime-node's own NuGet download skipped, then `npm run setup:cuda` fetches the provider
# package pinned in scripts/cuda/provider-package.ts, checks every file's SHA-256 and installs
# libonnxruntime_providers_{cuda,shared,tensorrt}.so beside onnxruntime-node's core.
FROM ${NODE_IMAGE} AS deps
WORKDIR /app
COPY package.json package-lock.json .npmrc tsconfig.json ./
COPY src ./src
COPY scripts ./scripts
RUN ONNXRUNTIME_NODE_INSTALL=skip npm ci --omit=dev --no-audit --no-fund \
 && npm run setup:cuda -- --cache-dir /tmp/cuda-provider \
 && rm -rf /tmp/cuda-provider \
 && test -f node_modules/onnxruntime-node/bin/napi-v6/linux/x64/libonnxruntime_providers_cuda.so

# 3. Runtime: the CUDA 13 + cuDNN 9 runtime (DESIGN.md §3) and the node binary of stages 1-2.
FROM ${CUDA_IMAGE}
COPY --from=deps /usr/local/bin/node /usr/local/bin/node
RUN groupadd --gid 10001 tokenformer \
 && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /app --shell /usr/sbin/nologin tokenformer
WORKDIR /app
COPY --from=deps /app/node_modules ./node_modules
COPY package.json tsconfig.json ./
COPY --from=check /app/src ./src
COPY --from=check /app/scripts ./scripts
# The shipped models; mount a volume or a directory over /app/models to serve others.
COPY models ./models
# Every library the CUDA provider links must resolve here (libcuda.so.1 comes from the host's
# driver at run time). A provider built for another CUDA major fails the build now instead of
# falling back to CPU in production.
RUN ort=/app/node_modules/onnxruntime-node/bin/napi-v6/linux/x64 \
 && missing="$(LD_LIBRARY_PATH="$ort:${LD_LIBRARY_PATH:-}" ldd "$ort/libonnxruntime_providers_cuda.so" \
      | grep 'not found' | grep -v 'libcuda\.so' || true)" \
 && if [ -n "$missing" ]; then printf 'CUDA provider dependencies missing:\n%s\n' "$missing" >&2; exit 1; fi
# The only directory the server writes: exports of checkpoints, made on first use.
RUN mkdir .cache && chown 10001:10001 .cache
# Environment fallbacks of scripts/serve.ts (flags win); DEVICE=auto is `--device auto`: CUDA, or
# CPU with the reason logged when no GPU is visible.
ENV NODE_ENV=production HOST=0.0.0.0 PORT=8080 MODEL=default DEVICE=auto
VOLUME ["/app/models"]
USER 10001:10001
EXPOSE 8080
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
  CMD ["node", "-e", "fetch('http://127.0.0.1:' + process.env.PORT + '/health').then((r) => process.exit(r.ok ? 0 : 1), () => process.exit(1))"]
# node itself as PID 1 (not npm or a shell), so SIGTERM reaches the server and it drains.
ENTRYPOINT ["node", "--import", "tsx", "scripts/serve.ts"]
