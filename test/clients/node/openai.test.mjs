// The official openai npm client against chutes-proxy. Run by the Go test
// TestNodeSDK (test/clients/node_test.go), which starts the proxy in front of
// a fake Chutes and sets OPENAI_BASE_URL; by hand:
//   go test ./test/clients -run TestNodeSDK -v
import { test } from 'node:test';
import assert from 'node:assert/strict';
import OpenAI from 'openai';

const R1 = 'deepseek-ai/DeepSeek-R1';

assert.ok(process.env.OPENAI_BASE_URL, 'OPENAI_BASE_URL must point at a running chutes-proxy (see node_test.go)');

// Exactly what a user does: base URL and key from the environment. No retries,
// so that each call is one request and errors show at once.
const client = new OpenAI({ maxRetries: 0, timeout: 15_000 });

const messages = [{ role: 'user', content: 'hi' }];

test('models list includes the upstream models and the aliases', async () => {
  const ids = [];
  for await (const m of client.models.list()) ids.push(m.id);
  for (const want of [R1, 'chutesai/Mistral-Small-3.1-24B-Instruct-2503', 'r1', 'auto']) {
    assert.ok(ids.includes(want), `${want} missing from ${JSON.stringify(ids)}`);
  }
});

test('chat, plain, through a failover', async () => {
  const { data, response } = await client.chat.completions
    .create({ model: 'auto', messages })
    .withResponse();
  assert.equal(data.choices[0].message.content, 'Hello from the fallback.');
  assert.equal(response.headers.get('x-chutes-proxy-model'), 'b/ok');
  assert.equal(response.headers.get('x-chutes-proxy-attempts'), '2');
});

test('chat, streaming, through a failover', async () => {
  const stream = await client.chat.completions.create({ model: 'auto', messages, stream: true });
  let text = '';
  let chunks = 0;
  for await (const chunk of stream) {
    chunks++;
    text += chunk.choices[0]?.delta?.content ?? '';
  }
  assert.equal(text, 'Hello from the fallback.');
  assert.ok(chunks >= 3, `${chunks} chunks`);
});

// The fake Chutes behind "echo/tools" answers with one tool call whose
// arguments are the raw bytes of the "tools" and "tool_choice" it received,
// so equality with JSON.stringify proves they went through byte for byte.
const tools = [
  {
    type: 'function',
    function: {
      name: 'get_weather',
      description: 'Current weather for a city — «quoted» & <escaped>?',
      strict: true,
      parameters: {
        type: 'object',
        properties: { city: { type: 'string' }, unit: { type: 'string', enum: ['celsius', 'fahrenheit'] } },
        required: ['city', 'unit'],
        additionalProperties: false,
      },
    },
  },
];
const toolChoice = { type: 'function', function: { name: 'get_weather' } };
const echoed = `{"tools":${JSON.stringify(tools)},"tool_choice":${JSON.stringify(toolChoice)}}`;

test('tool calls, plain: tools and tool_choice arrive intact, tool_calls come back', async () => {
  const resp = await client.chat.completions.create({ model: 'echo/tools', messages, tools, tool_choice: toolChoice });
  const choice = resp.choices[0];
  assert.equal(choice.finish_reason, 'tool_calls');
  assert.equal(choice.message.tool_calls.length, 1);
  const call = choice.message.tool_calls[0];
  assert.equal(call.id, 'call_echo');
  assert.equal(call.function.name, 'get_weather');
  assert.equal(call.function.arguments, echoed);
});

test('tool calls, streaming: argument pieces reassemble', async () => {
  const stream = await client.chat.completions.create({
    model: 'echo/tools', messages, tools, tool_choice: toolChoice, stream: true,
  });
  const calls = [];
  let finish = null;
  for await (const chunk of stream) {
    const c = chunk.choices[0];
    if (!c) continue;
    finish = c.finish_reason ?? finish;
    for (const d of c.delta.tool_calls ?? []) {
      calls[d.index] ??= { id: '', name: '', arguments: '' };
      calls[d.index].id += d.id ?? '';
      calls[d.index].name += d.function?.name ?? '';
      calls[d.index].arguments += d.function?.arguments ?? '';
    }
  }
  assert.equal(finish, 'tool_calls');
  assert.deepEqual(calls, [{ id: 'call_echo', name: 'get_weather', arguments: echoed }]);
});

test('response_format json_schema arrives intact', async () => {
  const responseFormat = {
    type: 'json_schema',
    json_schema: {
      name: 'weather',
      strict: true,
      schema: { type: 'object', properties: { c: { type: 'number' } }, required: ['c'], additionalProperties: false },
    },
  };
  const resp = await client.chat.completions.create({ model: 'echo/format', messages, response_format: responseFormat });
  assert.equal(resp.choices[0].message.content, JSON.stringify(responseFormat));
});

function assertOurError(err, status, code, text) {
  assert.ok(err instanceof OpenAI.APIError, `not an APIError: ${err}`);
  assert.equal(err.status, status);
  assert.equal(err.code, code);
  assert.ok(err.error.message.includes(text), err.error.message);
  assert.ok(err.message.includes(text), err.message);
  assert.ok(Array.isArray(err.error.attempts), 'error.attempts missing');
}

test('an upstream 402 surfaces as APIError with our code and message', async () => {
  await assert.rejects(
    client.chat.completions.create({ model: 'pay/one', messages }),
    (err) => { assertOurError(err, 402, 'payment_required', '300 requests a day'); return true; },
  );
});

test('every model down surfaces as APIError, streaming too', async () => {
  for (const stream of [false, true]) {
    await assert.rejects(
      (async () => {
        const s = await client.chat.completions.create({ model: 'down/all', messages, stream });
        if (stream) for await (const _ of s) { /* drain */ }
      })(),
      (err) => {
        assertOurError(err, 503, 'all_models_unavailable', 'No model could answer');
        assert.equal(err.error.attempts.length, 2);
        return true;
      },
    );
  }
});
