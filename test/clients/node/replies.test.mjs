// The openai npm client reads replies that chutes-proxy protects: plain
// requests assembled from a stream (stream_plain) and a stream resumed after
// a cut (resume_streams). Run by TestNodeSDKProtectedReplies
// (test/clients/replies_test.go), which starts the simulator and the proxy.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import OpenAI from 'openai';

const client = new OpenAI({ maxRetries: 0, timeout: 15_000 });
const REPLY = process.env.REPLY;
const messages = [{ role: 'user', content: 'hi' }];

test('a plain reply assembled from a stream', async () => {
  const { data, response } = await client.chat.completions
    .create({ model: 'good/two', messages })
    .withResponse();
  assert.equal(data.object, 'chat.completion');
  assert.equal(data.choices[0].message.content, REPLY);
  assert.equal(data.choices[0].finish_reason, 'stop');
  assert.ok(data.usage.completion_tokens > 0, JSON.stringify(data.usage));
  assert.match(response.headers.get('content-type'), /application\/json/);
});

test('a plain reply with reasoning', async () => {
  const data = await client.chat.completions.create({ model: 'think/m', messages });
  assert.equal(data.choices[0].message.content, REPLY);
  assert.equal(data.choices[0].message.reasoning_content, 'first I think');
});

test('a plain reply with tool calls', async () => {
  const data = await client.chat.completions.create({
    model: 'tools/m',
    messages,
    tools: [{ type: 'function', function: { name: 'get_weather', parameters: { type: 'object' } } }],
  });
  const calls = data.choices[0].message.tool_calls;
  assert.equal(calls.length, 2);
  assert.equal(calls[0].function.name, 'get_weather');
  JSON.parse(calls[0].function.arguments);
  assert.equal(data.choices[0].finish_reason, 'tool_calls');
});

test('a stream cut mid-reply and resumed reads as one reply', async () => {
  const stream = await client.chat.completions.create({ model: 'cutting', messages, stream: true });
  let text = '';
  const ids = new Set();
  for await (const chunk of stream) {
    ids.add(chunk.id);
    text += chunk.choices[0]?.delta?.content ?? '';
  }
  assert.equal(text, REPLY);
  assert.equal(ids.size, 1, `ids ${[...ids]}`);
});

test('a reply from another provider when Chutes is down, plain and streamed', async () => {
  const { data, response } = await client.chat.completions
    .create({ model: 'outage', messages })
    .withResponse();
  assert.equal(data.choices[0].message.content, 'from another provider');
  assert.equal(response.headers.get('x-chutes-proxy-model'), 'local:llm');
  const stream = await client.chat.completions.create({ model: 'outage', messages, stream: true });
  let text = '';
  for await (const chunk of stream) text += chunk.choices[0]?.delta?.content ?? '';
  assert.equal(text, 'from another provider');
});
