# CPU serving image (the CUDA image, Kubernetes files and hardening come with the deployment issue).
# Build: docker build -t tokenformer .
# Run:   docker run --rm -p 8080:8080 -v "$PWD/models:/app/models" tokenformer
FROM node:20-bookworm-slim AS deps
WORKDIR /app
COPY package.json package-lock.json .npmrc ./
# onnxruntime-node's CPU runtime ships inside the npm package; its CUDA download is skipped here
# (a GPU image leaves ONNXRUNTIME_NODE_INSTALL unset so the CUDA provider libraries come in).
ENV ONNXRUNTIME_NODE_INSTALL=skip
RUN npm ci --omit=dev --no-audit --no-fund

FROM node:20-bookworm-slim
WORKDIR /app
ENV NODE_ENV=production HOST=0.0.0.0 PORT=8080
COPY --from=deps /app/node_modules ./node_modules
COPY package.json tsconfig.json ./
COPY src ./src
COPY scripts ./scripts
COPY models ./models
RUN mkdir -p .cache && chown node:node .cache
USER node
EXPOSE 8080
HEALTHCHECK --interval=15s --timeout=3s CMD node -e "fetch('http://127.0.0.1:'+process.env.PORT+'/health').then(r=>process.exit(r.ok?0:1),()=>process.exit(1))"
# node directly (not npm) so SIGTERM reaches the server and it drains before exiting.
ENTRYPOINT ["node", "--import", "tsx", "scripts/serve.ts"]
CMD ["--model", "default"]
