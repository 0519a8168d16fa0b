import { readFileSync } from 'node:fs';
import type { FastifyPluginAsync } from 'fastify';
import type { ServerContext } from '../context.ts';

const PAGE = readFileSync(new URL('../playground.html', import.meta.url), 'utf8');

/** GET /: the playground, one self-contained page (inline script and style, nothing external). */
export const playgroundRoute: FastifyPluginAsync<{ ctx: ServerContext }> = async (app, { ctx }) => {
  // The served name: the page asks for it, and keeps it across swaps.
  const page = PAGE.replaceAll('{{MODEL}}', escapeHtml(ctx.modelName));
  app.get('/', async (_request, reply) =>
    reply
      .type('text/html; charset=utf-8')
      .header(
        'content-security-policy',
        "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; base-uri 'none'; form-action 'none'",
      )
      .send(page),
  );
};

function escapeHtml(s: string): string {
  return s.replace(
    /[&<>"']/g,
    (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]!,
  );
}
