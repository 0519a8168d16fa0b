# TokenFormer tools image (import, export; serving arrives with the server issue).
# Build: docker build -t tokenformer .
# Run:   docker run --rm -v "$PWD/models:/app/models" tokenformer run export -- --checkpoint models/x --out models/x-onnx
FROM node:20-bookworm-slim AS deps
WORKDIR /app
COPY package.json package-lock.json .npmrc ./
# CPU image: onnxruntime-node's CPU runtime ships inside the npm package; the CUDA provider
# download is skipped here (a GPU image leaves ONNXRUNTIME_NODE_INSTALL unset).
ENV ONNXRUNTIME_NODE_INSTALL=skip
RUN npm ci --omit=dev --no-audit --no-fund

FROM node:20-bookworm-slim
WORKDIR /app
ENV NODE_ENV=production
COPY --from=deps /app/node_modules ./node_modules
COPY package.json tsconfig.json ./
COPY src ./src
COPY scripts ./scripts
USER node
ENTRYPOINT ["npm"]
CMD ["run"]
