/**
 * Chat templates for `tensorwright serve`: the Jinja `chat_template` of a model's `tokenizer_config.json` (or of its
 * `tokenizer.json`), rendered with `@huggingface/jinja` as Hugging Face's `apply_chat_template` does
 * (`messages`, `add_generation_prompt`, `bos_token`, `eos_token`). Models without one (llama2.c checkpoints) get
 * {@link PLAIN_CHAT_TEMPLATE}: one `role: content` line per message, then `assistant:`.
 * @module
 */
import { existsSync, readFileSync, statSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { Template } from '@huggingface/jinja';
import { InputError, ModelFormatError } from '../errors.js';

/** The template of models that have none: `role: content` lines, then the assistant's turn. */
export const PLAIN_CHAT_TEMPLATE = "{% for message in messages %}{{ message['role'] }}: {{ message['content'] }}\n{% endfor %}{% if add_generation_prompt %}assistant:{% endif %}";

/** One chat message. */
export interface ChatMessage {
  /** `system`, `user`, `assistant` (or a role the template knows). */
  readonly role: string;
  /** The text. */
  readonly content: string;
}

/** A compiled chat template and the special-token strings it is rendered with. */
export class ChatTemplate {
  private readonly template: Template;
  constructor(
    /** The Jinja source. */
    readonly source: string,
    /** Where it came from (a file path, or `plain default`). */
    readonly origin: string,
    /** The BOS string the template may print (stripped from the front: the tokenizer adds BOS itself). */
    readonly bosToken = '',
    /** The EOS string. */
    readonly eosToken = '',
  ) {
    try {
      this.template = new Template(source);
    } catch (e) {
      throw new ModelFormatError('chat_template', 0, `the chat template does not parse: ${(e as Error).message}`, origin);
    }
  }

  /** The plain default ({@link PLAIN_CHAT_TEMPLATE}). */
  static plain(): ChatTemplate {
    return new ChatTemplate(PLAIN_CHAT_TEMPLATE, 'plain default');
  }

  /**
   * The template of a model: `chat_template` in `tokenizer_config.json` (or `tokenizer.json`) in the model's folder,
   * beside the model file, or beside the tokenizer file; else the plain default.
   */
  static find(modelPath: string, tokenizerPath?: string): ChatTemplate {
    const dirs = new Set<string>();
    for (const p of [modelPath, tokenizerPath]) {
      if (!p || !existsSync(p)) continue;
      dirs.add(statSync(p).isDirectory() ? p : dirname(p));
    }
    for (const d of dirs)
      for (const f of ['tokenizer_config.json', 'tokenizer.json']) {
        const path = join(d, f);
        if (!existsSync(path)) continue;
        const t = ChatTemplate.fromConfig(path);
        if (t) return t;
      }
    return ChatTemplate.plain();
  }

  /** The template of one `tokenizer_config.json` / `tokenizer.json`, or undefined when it has none. */
  static fromConfig(path: string): ChatTemplate | undefined {
    let cfg: Record<string, unknown>;
    try {
      cfg = JSON.parse(readFileSync(path, 'utf8')) as Record<string, unknown>;
    } catch (e) {
      throw new ModelFormatError('tokenizer_config', 0, `not JSON: ${(e as Error).message}`, path);
    }
    let source = cfg.chat_template;
    // a list of named templates: take `default`, else the first
    if (Array.isArray(source)) {
      const named = source as { name?: unknown; template?: unknown }[];
      source = (named.find((t) => t.name === 'default') ?? named[0])?.template;
    }
    if (source === undefined || source === null) return undefined;
    if (typeof source !== 'string') throw new ModelFormatError('chat_template', 0, 'chat_template must be a string or a list of {name, template}', path);
    const token = (v: unknown): string => (typeof v === 'string' ? v : v && typeof v === 'object' && typeof (v as { content?: unknown }).content === 'string' ? (v as { content: string }).content : '');
    return new ChatTemplate(source, path, token(cfg.bos_token), token(cfg.eos_token));
  }

  /** The prompt text for `messages`, ending with the assistant's turn (without a leading BOS string). */
  render(messages: readonly ChatMessage[]): string {
    let text: string;
    try {
      text = this.template.render({ messages, add_generation_prompt: true, bos_token: this.bosToken, eos_token: this.eosToken });
    } catch (e) {
      throw new InputError(`the chat template (${this.origin}) failed on these messages: ${(e as Error).message}`);
    }
    return this.bosToken && text.startsWith(this.bosToken) ? text.slice(this.bosToken.length) : text;
  }
}
