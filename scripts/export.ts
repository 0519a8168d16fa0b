import { exportCheckpoint } from '../src/export/export.ts';
import { parseFlags, progress, requireFlag, runMain } from '../src/util/cli.ts';
import { fail } from '../src/util/errors.ts';

const USAGE = 'npm run export -- --checkpoint DIR --out DIR [--external-data auto|always|never]';

runMain(async () => {
  const flags = parseFlags(USAGE, {
    checkpoint: { type: 'string' },
    out: { type: 'string' },
    'external-data': { type: 'string', default: 'auto' },
  });
  if (flags.help) return void console.log(USAGE);
  const ext = flags['external-data'];
  if (ext !== 'auto' && ext !== 'always' && ext !== 'never') {
    fail('TF_ERR_BAD_ARGS', `--external-data must be auto, always or never, got ${ext}\nusage: ${USAGE}`);
  }
  const out = requireFlag(USAGE, flags, 'out');
  const manifest = await exportCheckpoint(requireFlag(USAGE, flags, 'checkpoint'), out, {
    externalData: ext,
    onProgress: progress('export'),
  });
  const files = manifest.graphs.map((g) => g.file + (g.external_data ? ` (+ ${g.external_data})` : ''));
  console.log(
    `exported ${(manifest.parameters / 1e6).toFixed(2)}M parameters → ${out}: ${files.join(', ')}, manifest.json`,
  );
});
