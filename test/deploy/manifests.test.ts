import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { join, posix, relative, resolve } from 'node:path';
import { describe, test } from 'node:test';
import { parse } from 'yaml';
import { ServerProcess } from '../../scripts/harness/server.ts';
import { SERVE_DEFAULTS as D } from '../../src/server/defaults.ts';
import {
  applyJsonPatch,
  copyOf,
  dockerignore,
  envOf,
  execForm,
  instructionsOf,
  type PatchOp,
  parseDockerfile,
  readYaml,
  type Stage,
  type Yaml,
} from './files.ts';

/**
 * The deployment files agree with the server: Dockerfiles, Kubernetes manifests and the Prometheus
 * scrape configuration are read and held to SERVE_DEFAULTS (src/server/defaults.ts), the flags of
 * scripts/serve.ts and the metrics it registers; then the server is started with the Deployment's
 * own arguments and probed on the paths the manifests name. Docker and a cluster are not needed
 * (nor available in CI): the images are not built here.
 */

const ROOT = resolve(import.meta.dirname, '../..');
const K8S = join(ROOT, 'deploy/kubernetes');
const read = (path: string) => readFileSync(join(ROOT, path), 'utf8');

// ---------------------------------------------------------------------------------------------
// Kubernetes shapes used below (only the fields checked).

interface Container {
  name: string;
  image: string;
  args?: string[];
  command?: string[];
  env?: { name: string; value?: string; valueFrom?: { secretKeyRef?: { name: string; key: string } } }[];
  ports?: { name?: string; containerPort: number }[];
  startupProbe?: Probe;
  readinessProbe?: Probe;
  livenessProbe?: Probe;
  lifecycle?: { preStop?: { exec?: { command: string[] } } };
  resources?: { requests?: Record<string, unknown>; limits?: Record<string, unknown> };
  securityContext?: { readOnlyRootFilesystem?: boolean; allowPrivilegeEscalation?: boolean };
  volumeMounts?: { name: string; mountPath: string; readOnly?: boolean }[];
}
interface Probe {
  httpGet?: { path: string; port: string | number };
}
interface PodSpec {
  terminationGracePeriodSeconds?: number;
  securityContext?: { runAsNonRoot?: boolean; runAsUser?: number };
  tolerations?: { key?: string }[];
  containers: Container[];
  volumes?: { name: string; persistentVolumeClaim?: { claimName: string }; emptyDir?: object }[];
}
interface Deployment {
  metadata: { name: string };
  spec: {
    replicas?: number;
    selector: { matchLabels: Record<string, string> };
    template: { metadata: { labels: Record<string, string> }; spec: PodSpec };
  };
}
interface Service {
  metadata: { name: string; labels?: Record<string, string> };
  spec: {
    selector: Record<string, string>;
    ports: { name?: string; port: number; targetPort?: string | number }[];
  };
}

/** apiVersion of every kind the deployment files may hold. */
const KINDS: Record<string, string> = {
  Kustomization: 'kustomize.config.k8s.io/v1beta1',
  Deployment: 'apps/v1',
  Service: 'v1',
  PersistentVolumeClaim: 'v1',
  PodDisruptionBudget: 'policy/v1',
  Job: 'batch/v1',
  HorizontalPodAutoscaler: 'autoscaling/v2',
  ServiceMonitor: 'monitoring.coreos.com/v1',
};

function yamlFiles(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) =>
    e.isDirectory() ? yamlFiles(join(dir, e.name)) : e.name.endsWith('.yaml') ? [join(dir, e.name)] : [],
  );
}

const byFile = new Map(yamlFiles(K8S).map((f) => [relative(K8S, f), readYaml(f)]));
const all = [...byFile.values()].flat();
const one = <T>(kind: string, docs: Yaml[] = all): T => {
  const found = docs.filter((d) => d.kind === kind);
  assert.equal(found.length, 1, `expected exactly one ${kind}, found ${found.length}`);
  return found[0] as T;
};

/** The objects `kubectl apply -k dir` creates (resources, recursively; the overlay's patches applied). */
function render(dir: string): Yaml[] {
  const [k] = byFile.get(relative(K8S, join(dir, 'kustomization.yaml'))) ?? [];
  assert.ok(k, `${dir} has no kustomization.yaml`);
  const objects = ((k.resources as string[] | undefined) ?? []).flatMap((r) => {
    const path = resolve(dir, r);
    if (statSync(path).isDirectory()) return render(path);
    const docs = byFile.get(relative(K8S, path));
    assert.ok(docs, `${relative(ROOT, dir)}/kustomization.yaml lists ${r}, which is not a manifest here`);
    return docs;
  });
  const patches =
    (k.patches as { target: { kind: string; name: string }; patch: string }[] | undefined) ?? [];
  const images = (k.images as { name: string; newName?: string; newTag?: string }[] | undefined) ?? [];
  return objects.map((o) => {
    const meta = o.metadata as { name: string };
    const mine = patches.filter((p) => p.target.kind === o.kind && p.target.name === meta.name);
    const patched = mine.reduce(
      (doc, p) => applyJsonPatch(doc, parse(p.patch) as PatchOp[]),
      structuredClone(o),
    );
    const pod = (patched.spec as { template?: { spec?: PodSpec } } | undefined)?.template?.spec;
    for (const c of pod?.containers ?? []) {
      const [name, tag] = c.image.split(':');
      const image = images.find((i) => i.name === name);
      if (image) c.image = `${image.newName ?? name}:${image.newTag ?? tag}`;
    }
    return patched;
  });
}

const serverContainer = (d: Deployment) => {
  const c = d.spec.template.spec.containers.find((x) => x.name === 'server');
  assert.ok(c, 'the Deployment has a container named server');
  return c;
};

/** `--flag value` pairs; every flag must be one scripts/serve.ts accepts. */
function flagsOf(args: readonly string[]): Map<string, string> {
  const usage = /const USAGE =([\s\S]*?);\n/.exec(read('scripts/serve.ts'))?.[1];
  assert.ok(usage, 'scripts/serve.ts declares USAGE');
  const known = new Set([...usage.matchAll(/--([a-z][a-z-]*)/g)].map((m) => m[1]!));
  assert.ok(known.has('drain-timeout-ms') && known.has('model'), 'USAGE lists the flags');
  const flags = new Map<string, string>();
  for (let i = 0; i < args.length; i += 2) {
    const flag = args[i]!;
    const value = args[i + 1];
    assert.ok(flag.startsWith('--') && known.has(flag.slice(2)), `${flag} is not a flag of scripts/serve.ts`);
    assert.ok(value !== undefined && !value.startsWith('--'), `${flag} needs a value`);
    flags.set(flag.slice(2), value);
  }
  return flags;
}

/** A port given by name or number, resolved against the container's ports. */
function containerPort(c: Container, port: string | number | undefined): number | undefined {
  if (typeof port === 'number') return port;
  return c.ports?.find((p) => p.name === port)?.containerPort;
}

const selects = (selector: Record<string, string>, labels: Record<string, string>) =>
  Object.keys(selector).length > 0 && Object.entries(selector).every(([k, v]) => labels[k] === v);

// ---------------------------------------------------------------------------------------------
// Dockerfiles

const dockerfiles = {
  gpu: parseDockerfile(read('Dockerfile')),
  cpu: parseDockerfile(read('Dockerfile.cpu')),
};
const finalStage = (stages: Stage[]) => stages.at(-1)!;

/** The uid of the final stage's USER (numeric, so Kubernetes can verify runAsNonRoot). */
function imageUid(stages: Stage[]): number {
  const user = instructionsOf(finalStage(stages), 'USER').at(-1)?.args;
  assert.ok(user, 'the image sets USER');
  const uid = Number(user.split(':')[0]);
  assert.ok(Number.isInteger(uid), `USER ${user} is numeric`);
  return uid;
}

describe('Dockerfiles', () => {
  const ignored = dockerignore(read('.dockerignore'));

  for (const [variant, stages] of Object.entries(dockerfiles)) {
    const final = finalStage(stages);
    const env = envOf(final);

    test(`${variant}: the server listens on the default port on every interface`, () => {
      const exposed = instructionsOf(final, 'EXPOSE').flatMap((i) => i.args.split(/\s+/));
      assert.deepEqual(exposed, [String(D.port)]);
      assert.equal(env.get('PORT'), String(D.port));
      // The default host is loopback: unreachable through a published port.
      assert.equal(env.get('HOST'), '0.0.0.0');
      assert.equal(env.get('DEVICE'), variant === 'gpu' ? D.device : 'cpu');
    });

    test(`${variant}: HEALTHCHECK asks /health on the serving port`, () => {
      const [hc] = instructionsOf(final, 'HEALTHCHECK');
      assert.ok(hc, 'HEALTHCHECK is set');
      const cmd = execForm(hc.args.slice(hc.args.indexOf('CMD ') + 4));
      assert.ok(cmd, 'HEALTHCHECK CMD has the exec form');
      assert.equal(cmd[0], 'node');
      const script = cmd.join(' ');
      assert.ok(script.includes(`'${D.healthPath}'`), script);
      assert.ok(script.includes('process.env.PORT'), 'it follows PORT');
    });

    test(`${variant}: it runs as a numeric non-root user that owns .cache`, () => {
      const uid = imageUid(stages);
      assert.notEqual(uid, 0);
      const runs = instructionsOf(final, 'RUN').map((i) => i.args);
      assert.ok(
        runs.some((r) => new RegExp(`chown ${uid}(:\\d+)? \\.cache\\b`).test(r)),
        'the only directory the server writes (.cache) is the user’s',
      );
      assert.equal(instructionsOf(final, 'WORKDIR').at(-1)?.args, '/app');
    });

    test(`${variant}: ENTRYPOINT execs node on scripts/serve.ts (SIGTERM reaches the server)`, () => {
      const [ep] = instructionsOf(final, 'ENTRYPOINT');
      assert.ok(ep, 'ENTRYPOINT is set');
      const argv = execForm(ep.args);
      assert.deepEqual(argv, ['node', '--import', 'tsx', 'scripts/serve.ts']);
      assert.ok(existsSync(join(ROOT, argv[3]!)));
      // The runtime installs with --omit=dev, so tsx must be a production dependency.
      const pkg = JSON.parse(read('package.json')) as { dependencies: Record<string, string> };
      assert.ok(pkg.dependencies.tsx, 'tsx is in dependencies');
      assert.equal(instructionsOf(final, 'CMD').length, 0, 'options come from ENV, so -e and args both work');
    });

    test(`${variant}: every file copied from the build context exists and passes .dockerignore`, () => {
      const copies = stages.flatMap((s) => instructionsOf(s, 'COPY')).map(copyOf);
      const sources = copies.filter((c) => c.from === undefined).flatMap((c) => c.sources);
      assert.ok(sources.includes('src') && sources.includes('models'));
      for (const s of sources) {
        assert.ok(existsSync(join(ROOT, s)), `${s} exists`);
        assert.ok(!ignored(s), `${s} is not excluded by .dockerignore`);
      }
      const stageNames = new Set(stages.map((s) => s.name));
      for (const c of copies)
        if (c.from) assert.ok(stageNames.has(c.from), `COPY --from=${c.from} names a stage`);
    });

    test(`${variant}: every npm ci skips onnxruntime-node's CUDA download, except the GPU image's deps`, () => {
      for (const stage of stages) {
        for (const run of instructionsOf(stage, 'RUN').filter((r) => r.args.includes('npm ci'))) {
          if (variant === 'gpu' && stage.name === 'deps') continue;
          const skips =
            envOf(stage).get('ONNXRUNTIME_NODE_INSTALL') === 'skip' ||
            run.args.includes('ONNXRUNTIME_NODE_INSTALL=skip npm ci');
          // .npmrc holds no key for it (npm 11 warns about unknown keys on every run).
          assert.ok(skips, `stage ${stage.name}: ${run.args}`);
        }
      }
    });

    test(`${variant}: the typecheck gate runs and the runtime takes its sources from it`, () => {
      const check = stages.find((s) => instructionsOf(s, 'RUN').some((r) => r.args.includes('tsc --noEmit')));
      assert.ok(check?.name, 'a named stage runs tsc --noEmit');
      // BuildKit skips stages nothing depends on: the runtime must copy from the checked one.
      const fromCheck = instructionsOf(final, 'COPY')
        .map(copyOf)
        .filter((c) => c.from === check.name);
      assert.deepEqual(fromCheck.flatMap((c) => c.sources).sort(), ['/app/scripts', '/app/src']);
    });
  }

  test('gpu: CUDA 13 + cuDNN 9 runtime, with the CUDA provider installed from npm by setup:cuda', () => {
    const stages = dockerfiles.gpu;
    assert.match(finalStage(stages).image, /^nvidia\/cuda:13\.\d+\.\d+-cudnn-runtime-ubuntu\d+\.\d+$/);
    const deps = stages.find((s) => s.name === 'deps');
    assert.ok(deps);
    const install = instructionsOf(deps, 'RUN').find((r) => r.args.includes('npm ci'));
    assert.ok(install, 'the deps stage runs npm ci');
    assert.ok(install.args.includes('--omit=dev'));
    // Nothing from outside npm: onnxruntime-node's own NuGet download stays skipped.
    assert.ok(install.args.includes('ONNXRUNTIME_NODE_INSTALL=skip npm ci'));
    assert.ok(!install.args.includes('--onnxruntime-node-install'));
    assert.ok(install.args.includes('npm run setup:cuda'), 'the provider comes from the npm registry');
    assert.ok(install.args.includes('libonnxruntime_providers_cuda.so'), 'the install is checked');
    assert.ok(
      instructionsOf(finalStage(stages), 'RUN').some((r) => r.args.includes('ldd')),
      'the provider’s CUDA libraries are checked against the runtime image',
    );
  });

  test('cpu: the CUDA download is skipped', () => {
    const deps = dockerfiles.cpu.find((s) => s.name === 'deps');
    assert.ok(deps);
    assert.equal(envOf(deps).get('ONNXRUNTIME_NODE_INSTALL'), 'skip');
  });

  test('npm runs without warnings about the project configuration', () => {
    const r = spawnSync('npm', ['pkg', 'get', 'name'], { cwd: ROOT, encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
    assert.doesNotMatch(r.stderr, /warn/i);
  });

  test('every install script of the dependencies is reviewed in allowScripts; the nuget download is denied', () => {
    const pkg = JSON.parse(read('package.json')) as { allowScripts?: Record<string, boolean> };
    assert.equal(pkg.allowScripts?.['onnxruntime-node'], false);
    const [major = 0, minor = 0] = spawnSync('npm', ['--version'], { encoding: 'utf8' })
      .stdout.split('.')
      .map(Number);
    // npm reads allowScripts from 11.16 on; with an older npm only the declared policy is checked.
    if (major < 11 || (major === 11 && minor < 16)) return;
    const r = spawnSync('npm', ['install-scripts', 'ls', '--json'], { cwd: ROOT, encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
    assert.deepEqual((JSON.parse(r.stdout) as { allowScripts: unknown[] }).allowScripts, []);
  });

  test('.dockerignore follows Docker’s rules: allow-list, last match wins, parents match', () => {
    assert.ok(ignored('node_modules') && ignored('node_modules/onnxruntime-node/package.json'));
    assert.ok(ignored('.cache/exports/x') && ignored('test/e2e/server.test.ts') && ignored('.git'));
    assert.ok(!ignored('src/server/app.ts') && !ignored('.npmrc') && !ignored('models/default/config.json'));
    const m = dockerignore('**/*.log\n!keep/*.log\nbuild/\n');
    assert.ok(m('a/b/c.log') && m('c.log') && !m('keep/c.log') && m('build/x/y') && !m('builder'));
  });
});

// ---------------------------------------------------------------------------------------------
// Kubernetes

describe('Kubernetes manifests', () => {
  test('every manifest parses, with a known kind, its apiVersion and a name', () => {
    assert.ok(byFile.size >= 8, `found ${byFile.size} manifests`);
    for (const [file, docs] of byFile) {
      assert.ok(docs.length > 0, `${file} is empty`);
      for (const d of docs) {
        const kind = d.kind as string;
        assert.ok(kind in KINDS, `${file}: unexpected kind ${kind}`);
        assert.equal(d.apiVersion, KINDS[kind], `${file}: ${kind}`);
        if (kind !== 'Kustomization')
          assert.ok((d.metadata as { name?: string } | undefined)?.name, `${file}: ${kind} has a name`);
      }
    }
  });

  test('each kustomization lists every manifest beside it, and only existing ones', () => {
    for (const [file, [k]] of byFile) {
      if (!file.endsWith('kustomization.yaml')) continue;
      const dir = posix.dirname(file);
      const listed = new Set(((k!.resources as string[] | undefined) ?? []).map((r) => posix.join(dir, r)));
      for (const r of listed) assert.ok(existsSync(join(K8S, r)), `${file}: ${r} exists`);
      for (const other of byFile.keys())
        if (posix.dirname(other) === dir && !other.endsWith('kustomization.yaml'))
          assert.ok(listed.has(other), `${file} lists ${other}`);
    }
  });

  const dirs = { gpu: K8S, cpu: join(K8S, 'cpu') };
  /** A variant's objects and server pod, read inside each test so that a broken manifest fails it. */
  const variantOf = (variant: keyof typeof dirs) => {
    const objects = render(dirs[variant]);
    const deployment = one<Deployment>('Deployment', objects);
    const c = serverContainer(deployment);
    const { spec: pod, metadata } = deployment.spec.template;
    return { objects, deployment, pod, labels: metadata.labels, c, flags: flagsOf(c.args ?? []) };
  };
  const hpaOf = () =>
    one<{
      spec: {
        scaleTargetRef: { apiVersion: string; kind: string; name: string };
        metrics: { type: string; pods?: { metric: { name: string } } }[];
      };
    }>('HorizontalPodAutoscaler', render(join(K8S, 'monitoring')));

  for (const variant of ['gpu', 'cpu'] as const) {
    test(`${variant}: the server listens on the default port, reachable from the kubelet`, () => {
      const { c, flags } = variantOf(variant);
      assert.equal(Number(flags.get('port')), D.port);
      assert.equal(flags.get('host'), '0.0.0.0');
      assert.equal(containerPort(c, 'http'), D.port);
      assert.equal(flags.get('device'), variant === 'gpu' ? D.device : 'cpu');
      assert.equal(c.image, `tokenformer:${variant}`);
    });

    test(`${variant}: probes ask /health (liveness) and /ready (readiness, startup) on that port`, () => {
      const { c } = variantOf(variant);
      const probes = { livenessProbe: D.healthPath, readinessProbe: D.readyPath, startupProbe: D.readyPath };
      for (const [probe, path] of Object.entries(probes)) {
        const get = (c[probe as keyof Container] as Probe | undefined)?.httpGet;
        assert.ok(get, `${probe} is an httpGet`);
        assert.equal(get.path, path, probe);
        assert.equal(containerPort(c, get.port), D.port, `${probe} port`);
      }
    });

    test(`${variant}: the grace period outlasts preStop, the drain and the close`, () => {
      const { c, flags, pod } = variantOf(variant);
      const drainMs = Number(flags.get('drain-timeout-ms'));
      assert.ok(
        Number.isInteger(drainMs) && drainMs >= D.drainTimeoutMs,
        'the drain timeout is passed explicitly',
      );
      const preStop = c.lifecycle?.preStop?.exec?.command;
      assert.ok(preStop?.[0] === 'sleep', 'preStop sleeps so the endpoint is removed before SIGTERM');
      const preStopS = Number(preStop[1]);
      assert.ok(preStopS > 0);
      const grace = pod.terminationGracePeriodSeconds;
      assert.ok(grace !== undefined && grace * 1000 > D.drainTimeoutMs);
      // The kubelet's clock starts at preStop; after the drain, serve.ts allows 5 s each for
      // closing the HTTP server and the engine.
      assert.ok(
        grace * 1000 >= preStopS * 1000 + drainMs + 10_000,
        `terminationGracePeriodSeconds ${grace} ≥ ${preStopS} s + ${drainMs} ms + 10 s`,
      );
    });

    test(`${variant}: non-root, read-only root, writable .cache and /tmp, models from the volume`, () => {
      const { c, pod, objects } = variantOf(variant);
      assert.equal(pod.securityContext?.runAsNonRoot, true);
      assert.equal(pod.securityContext?.runAsUser, imageUid(dockerfiles[variant]));
      assert.equal(c.securityContext?.readOnlyRootFilesystem, true);
      assert.equal(c.securityContext?.allowPrivilegeEscalation, false);
      const mount = (path: string) => {
        const m = c.volumeMounts?.find((v) => v.mountPath === path);
        assert.ok(m, `${path} is mounted`);
        return { mount: m, volume: pod.volumes?.find((v) => v.name === m.name) };
      };
      for (const dir of ['/app/.cache', '/tmp']) {
        const { mount: m, volume } = mount(dir);
        assert.ok(volume?.emptyDir && !m.readOnly, `${dir} is a writable emptyDir`);
      }
      const models = mount(posix.join('/app', D.modelsDir));
      assert.equal(models.mount.readOnly, true, 'the server never writes its models');
      const claim = models.volume?.persistentVolumeClaim?.claimName;
      assert.ok(
        claim &&
          objects.some((o) => o.kind === 'PersistentVolumeClaim' && (o.metadata as Yaml).name === claim),
      );
      const job = one<{ spec: { template: { spec: PodSpec } } }>('Job', objects).spec.template.spec;
      assert.ok(
        job.volumes?.some((v) => v.persistentVolumeClaim?.claimName === claim),
        'the seed Job fills that claim',
      );
      assert.equal(job.containers[0]?.image, c.image);
    });

    test(`${variant}: GPU requested only by the GPU variant`, () => {
      const { c, pod } = variantOf(variant);
      const gpus = c.resources?.limits?.['nvidia.com/gpu'];
      if (variant === 'gpu') assert.equal(gpus, 1);
      else {
        assert.equal(gpus, undefined);
        assert.equal(c.resources?.requests?.['nvidia.com/gpu'], undefined);
        assert.ok(!pod.tolerations?.some((t) => t.key === 'nvidia.com/gpu'));
      }
    });

    test(`${variant}: the admin token comes from a Secret`, () => {
      const { c } = variantOf(variant);
      const e = c.env?.find((x) => x.name === 'TOKENFORMER_ADMIN_TOKEN');
      assert.ok(e?.valueFrom?.secretKeyRef && e.value === undefined);
    });

    test(`${variant}: Deployment, Service and PodDisruptionBudget select the server pods`, () => {
      const { c, deployment, labels, objects } = variantOf(variant);
      assert.ok(selects(deployment.spec.selector.matchLabels, labels), 'Deployment selector');
      const svc = one<Service>('Service', objects);
      assert.ok(selects(svc.spec.selector, labels), 'Service selector');
      const http = svc.spec.ports.find((p) => p.name === 'http');
      assert.equal(containerPort(c, http?.targetPort), D.port, 'Service targetPort');
      const pdb = one<{ spec: { selector: { matchLabels: Record<string, string> }; minAvailable: number } }>(
        'PodDisruptionBudget',
        objects,
      );
      assert.ok(selects(pdb.spec.selector.matchLabels, labels), 'PDB selector');
      // minAvailable equal to the replicas would block every node drain.
      assert.ok(pdb.spec.minAvailable < (deployment.spec.replicas ?? 1));
    });
  }

  test('ServiceMonitor scrapes /metrics on the Service’s http port', () => {
    const { c, objects } = variantOf('gpu');
    const service = one<Service>('Service', objects);
    const sm = one<{
      spec: {
        selector: { matchLabels: Record<string, string> };
        endpoints: { port: string; path: string }[];
      };
    }>('ServiceMonitor', render(join(K8S, 'monitoring')));
    assert.ok(selects(sm.spec.selector.matchLabels, service.metadata.labels ?? {}));
    assert.equal(sm.spec.endpoints.length, 1);
    const [ep] = sm.spec.endpoints;
    assert.equal(ep!.path, D.metricsPath);
    const port = service.spec.ports.find((p) => p.name === ep!.port);
    assert.equal(containerPort(c, port?.targetPort), D.port);
  });

  test('prometheus.yml scrapes /metrics from the Service’s endpoints on the http port', () => {
    const { c, objects } = variantOf('gpu');
    const service = one<Service>('Service', objects);
    const [config] = readYaml(join(K8S, 'monitoring/prometheus.yml'));
    type Relabel = { source_labels?: string[]; regex?: string; action?: string };
    const jobs = config!.scrape_configs as {
      metrics_path: string;
      kubernetes_sd_configs: { role: string }[];
      relabel_configs: Relabel[];
    }[];
    assert.equal(jobs.length, 1);
    const job = jobs[0]!;
    assert.equal(job.metrics_path, D.metricsPath);
    assert.deepEqual(
      job.kubernetes_sd_configs.map((s) => s.role),
      ['endpoints'],
    );
    const keep = (label: string) =>
      job.relabel_configs.find((r) => r.action === 'keep' && r.source_labels?.join() === label)?.regex;
    const portName = keep('__meta_kubernetes_endpoint_port_name');
    const port = service.spec.ports.find((p) => p.name === portName);
    assert.equal(containerPort(c, port?.targetPort), D.port);
    const app = keep('__meta_kubernetes_service_label_app_kubernetes_io_name');
    assert.equal(app, service.metadata.labels?.['app.kubernetes.io/name']);
  });

  test('the HPA scales the Deployment on a metric the server registers', () => {
    const { deployment } = variantOf('gpu');
    const hpa = hpaOf();
    assert.deepEqual(hpa.spec.scaleTargetRef, {
      apiVersion: 'apps/v1',
      kind: 'Deployment',
      name: deployment.metadata.name,
    });
    const names = hpa.spec.metrics.map((m) => m.pods?.metric.name);
    assert.deepEqual(names, ['tokenformer_requests_waiting']);
    assert.ok(read('src/server/metrics.ts').includes(`'${names[0]}'`), `${names[0]} is registered`);
  });

  test('the server started with the Deployment’s arguments answers every probe path and drains on SIGTERM', async () => {
    const { c, flags } = variantOf('gpu');
    const metric = hpaOf().spec.metrics[0]?.pods?.metric.name;
    const args = [...flags]
      // The test picks a free loopback port; the rest is the manifest's.
      .filter(([flag]) => flag !== 'host' && flag !== 'port')
      .flatMap(([flag, value]) => [`--${flag}`, value]);
    const server = await ServerProcess.start(args); // cwd: the repository, whose models/ the image ships
    let code: number | null;
    try {
      for (const probe of [c.livenessProbe, c.readinessProbe, c.startupProbe]) {
        const res = await fetch(`${server.url}${probe!.httpGet!.path}`);
        assert.equal(res.status, 200, probe!.httpGet!.path);
      }
      const metrics = await server.metricsText();
      // One series per loaded model version (the adapter's rule sums them per pod).
      assert.match(
        metrics,
        new RegExp(`^${metric}(\\{[^}]*\\})? \\d+$`, 'm'),
        'the HPA’s metric is exported',
      );
    } finally {
      code = await server.stop();
    }
    assert.equal(code, 0, server.output.slice(-2000));
    assert.match(server.output, new RegExp(`"drainTimeoutMs":${flags.get('drain-timeout-ms')}\\b`));
  });
});
