// Chat templates of `serve`: Hugging Face `chat_template`s from tokenizer_config.json rendered with @huggingface/jinja
// as transformers' apply_chat_template renders them (expected strings written out by hand from the templates), the
// plain default for models without one, and typed errors for broken templates.
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { ChatTemplate } from '../src/cli/chat-template.js';

// ChatML (Qwen2, many others)
const CHATML = "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";
// Zephyr-style, printing the BOS string first
const ZEPHYR = "{{ bos_token }}{% for message in messages %}{{ '<|' + message['role'] + '|>\\n' + message['content'] + eos_token + '\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% endif %}";

function folderWith(config: unknown): string {
  const dir = mkdtempSync(join(tmpdir(), 'tw-chat-'));
  writeFileSync(join(dir, 'tokenizer_config.json'), JSON.stringify(config));
  writeFileSync(join(dir, 'model.bin'), '');
  return dir;
}

describe('ChatTemplate', () => {
  const messages = [
    { role: 'system', content: 'Be brief.' },
    { role: 'user', content: 'Hi!' },
  ];

  it('renders a ChatML template from tokenizer_config.json with the generation prompt', () => {
    const t = ChatTemplate.find(join(folderWith({ chat_template: CHATML }), 'model.bin'));
    expect(t.render(messages)).toBe('<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi!<|im_end|>\n<|im_start|>assistant\n');
  });

  it('passes bos/eos strings (plain or AddedToken objects) and drops a leading BOS string, which the tokenizer adds', () => {
    const dir = folderWith({ chat_template: ZEPHYR, bos_token: { content: '<s>' }, eos_token: '</s>' });
    expect(ChatTemplate.find(dir).render(messages)).toBe('<|system|>\nBe brief.</s>\n<|user|>\nHi!</s>\n<|assistant|>\n');
  });

  it('takes the default of a list of named templates', () => {
    const dir = folderWith({ chat_template: [{ name: 'tool_use', template: 'TOOLS' }, { name: 'default', template: CHATML }] });
    expect(ChatTemplate.find(dir).render([{ role: 'user', content: 'x' }])).toBe('<|im_start|>user\nx<|im_end|>\n<|im_start|>assistant\n');
  });

  it('falls back to the plain default without a template', () => {
    const t = ChatTemplate.find(join(folderWith({ bos_token: '<s>' }), 'model.bin'));
    expect(t.origin).toBe('plain default');
    expect(t.render(messages)).toBe('system: Be brief.\nuser: Hi!\nassistant:');
  });

  it('a template that does not parse is a typed model-format error', () => {
    expect(() => ChatTemplate.find(folderWith({ chat_template: '{% for m in messages %}' }))).toThrow(expect.objectContaining({ code: 'BAD_MODEL_FILE', field: 'chat_template' }));
    expect(() => ChatTemplate.find(folderWith({ chat_template: 42 }))).toThrow(/chat_template must be a string/);
  });
});
