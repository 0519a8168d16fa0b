import type { FastifyPluginAsync } from 'fastify';
import { type ChatTemplates, chatBodySchema } from '../chat.ts';
import type { ServerContext } from '../context.ts';
import { ApiError } from '../errors.ts';
import { formatSchemaErrors, type SchemaError, schemaErrorParam } from '../schema-errors.ts';
import { type Validate, WsConnection } from '../ws-connection.ts';
import type { WsSocket } from '../ws-send.ts';
import { completionsBodySchema } from './completions.ts';

/** GET /v1/stream: completions and chat completions over a WebSocket (messages in ../PROTOCOL.md). */
export const streamRoute: FastifyPluginAsync<{ ctx: ServerContext; templates: ChatTemplates }> = async (
  app,
  { ctx, templates },
) => {
  app.route({
    method: 'GET',
    url: '/v1/stream',
    handler: async () => {
      throw new ApiError(
        'TF_ERR_BAD_ARGS',
        'GET /v1/stream is a WebSocket endpoint: connect with an upgrade',
      );
    },
    wsHandler: (socket, request) => {
      // The same schema (and compiler) as POST /v1/completions checks completion.create messages.
      const validator = (schema: object): Validate => {
        const check = request.compileValidationSchema(schema);
        return (msg) => {
          if (check(msg)) return null;
          const errors = (check.errors ?? []) as SchemaError[];
          return { message: formatSchemaErrors(errors, 'message'), param: schemaErrorParam(errors) };
        };
      };
      const chat = { validate: validator(chatBodySchema), templates };
      new WsConnection(socket as WsSocket, ctx, validator(completionsBodySchema), request.log, chat);
    },
  });
};
