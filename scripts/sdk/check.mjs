// The official OpenAI Node SDK against Tollgate: non-stream, stream, model list, and each relay
// error raised as the SDK's matching error class. Reads BASE, KEY, POOR_KEY from the
// environment (scripts/sdk/run.sh sets them).
import OpenAI from 'openai';

const { BASE, KEY, POOR_KEY } = process.env;
const REPLY = '你好！很高兴见到你！今天过得怎么样？有什么我可以帮你的吗？';
const MSG = [{ role: 'user', content: '你好！' }];
let failed = 0;
const client = (key = KEY) => new OpenAI({ baseURL: `${BASE}/v1`, apiKey: key, maxRetries: 0 });
const assert = (ok, what) => { if (!ok) throw new Error(what); };

async function check(name, fn) {
  try { await fn(); console.log(`PASS node ${name}`); }
  catch (e) { failed++; console.log(`FAIL node ${name}: ${e?.constructor?.name}: ${e?.message}`); }
}

const raises = (cls, code, over = {}) => async () => {
  const { key, ...body } = over;
  try {
    await client(key).chat.completions.create({ model: 'qwen-turbo', messages: MSG, ...body });
  } catch (e) {
    assert(e instanceof cls, `expected ${cls.name}, got ${e?.constructor?.name} (${e?.status})`);
    if (code) assert(e.code === code, `code ${e.code}`);
    return;
  }
  throw new Error(`no ${cls.name}`);
};

await check('non-stream', async () => {
  const r = await client().chat.completions.create({ model: 'qwen-turbo', messages: MSG });
  assert(r.choices[0].message.content === REPLY, 'content');
  assert(r.usage.total_tokens === 32, 'usage');
});
await check('stream', async () => {
  const s = await client().chat.completions.create({ model: 'qwen-turbo', messages: MSG, stream: true });
  let text = '';
  for await (const c of s) { assert(!c.usage, 'usage shown unasked'); text += c.choices[0]?.delta?.content ?? ''; }
  assert(text === REPLY, `text ${text}`);
});
await check('models.list', async () => {
  const ids = [];
  for await (const m of client().models.list()) ids.push(m.id);
  assert(ids.includes('qwen-turbo'), ids.join(','));
});
await check('401 invalid key -> AuthenticationError', raises(OpenAI.AuthenticationError, 'invalid_api_key', { key: 'sk-invalid' }));
await check('404 unknown model -> NotFoundError', raises(OpenAI.NotFoundError, 'model_not_found', { model: 'nope' }));
await check('403 no balance -> PermissionDeniedError', raises(OpenAI.PermissionDeniedError, 'insufficient_user_quota', { key: POOR_KEY }));
await check('400 empty messages -> BadRequestError', raises(OpenAI.BadRequestError, 'invalid_request_error', { messages: [] }));
await check('502 upstream failed -> InternalServerError', raises(OpenAI.InternalServerError, 'upstream_error', { model: 'm-500' }));
await check('503 no channel -> InternalServerError', raises(OpenAI.InternalServerError, 'no_available_channel', { model: 'm-off' }));
console.log(`node: ${failed} failed`);
process.exit(failed ? 1 : 0);
