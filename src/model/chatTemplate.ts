/**
 * Chat templates: the model's own Jinja template (GGUF `tokenizer.chat_template`), rendered with
 * @huggingface/jinja, or a plain transcript for models that have none.
 *
 * Special-token policy (RELIABILITY H8): only the BOS and EOS tokens that the *template* inserts
 * (`bos_token`, `eos_token`) become token ids. Everything else, including special-token strings
 * such as "</s>" or "<|im_start|>" typed into a message, is tokenized as text, in line with the
 * tokenizer's rule that text is never parsed for special tokens. The template gets per-render
 * random markers in place of bos_token and eos_token, so message content cannot forge them.
 */
import { randomBytes } from "node:crypto";
import { Template } from "@huggingface/jinja";
import { ChatTemplateError, describeError } from "../base/index.js";
import type { GgufMetadata } from "./ggufReader.js";
import type { Tokenizer } from "./tokenizer.js";

export const CHAT_TEMPLATE_KEY = "tokenizer.chat_template";

/**
 * For a model without a chat template (base models such as stories260K): one "role: content"
 * line per message, then "assistant:" for the model to continue. A base model was never trained
 * on it, so it only frames the conversation as a transcript.
 */
export const FALLBACK_CHAT_TEMPLATE =
  "{% for message in messages %}{{ message.role }}: {{ message.content }}\n{% endfor %}{% if add_generation_prompt %}assistant:{% endif %}";

export interface ChatMessage {
  role: string;
  content: string;
}

export interface ChatTemplateOptions {
  /** End with the assistant's turn opened, for the model to answer. Defaults to true. */
  addGenerationPrompt?: boolean;
}

export class ChatTemplate {
  readonly #template: Template;

  /** `isFallback`: the model has no template and FALLBACK_CHAT_TEMPLATE stands in. */
  constructor(readonly source: string, readonly isFallback = false) {
    try {
      this.#template = new Template(source);
    } catch (error) {
      throw new ChatTemplateError(`the chat template does not parse: ${describeError(error)}`, { cause: error });
    }
  }

  /** The model's template, or the documented fallback when the file has none. */
  static fromGguf(metadata: GgufMetadata): ChatTemplate {
    const source = metadata.string(CHAT_TEMPLATE_KEY);
    return source === undefined || source.trim() === "" ? new ChatTemplate(FALLBACK_CHAT_TEMPLATE, true) : new ChatTemplate(source);
  }

  /** The prompt as text, with BOS and EOS spelled as the tokenizer's pieces (for display and logs). */
  render(messages: readonly ChatMessage[], tokenizer: Tokenizer, options: ChatTemplateOptions = {}): string {
    return this.#render(messages, tokenizer.tokenPiece(tokenizer.bosId), tokenizer.tokenPiece(tokenizer.eosId), options);
  }

  /**
   * The prompt's token ids: template text tokenized as text, the template's BOS/EOS as their ids.
   * BOS is prepended when the tokenizer adds one and the template did not start with it.
   */
  encode(messages: readonly ChatMessage[], tokenizer: Tokenizer, options: ChatTemplateOptions = {}): number[] {
    const nonce = randomBytes(8).toString("hex");
    const bosMarker = `\u0000bos-${nonce}\u0000`;
    const eosMarker = `\u0000eos-${nonce}\u0000`;
    const text = this.#render(messages, bosMarker, eosMarker, options);
    const ids: number[] = [];
    // Each text piece follows a special token or starts the prompt, so it takes the tokenizer's
    // dummy-prefix space as llama.cpp does for text fragments after a special token.
    for (const [index, piece] of text.split(new RegExp(`(${bosMarker}|${eosMarker})`)).entries()) {
      if (index % 2 === 1) ids.push(piece === bosMarker ? tokenizer.bosId : tokenizer.eosId);
      else if (piece.length > 0) ids.push(...tokenizer.encode(piece, { addBos: false }));
    }
    if (tokenizer.addBos && ids[0] !== tokenizer.bosId) ids.unshift(tokenizer.bosId);
    return ids;
  }

  #render(messages: readonly ChatMessage[], bosToken: string, eosToken: string, options: ChatTemplateOptions): string {
    try {
      return this.#template.render({
        messages: messages.map((m) => ({ role: m.role, content: m.content })),
        add_generation_prompt: options.addGenerationPrompt ?? true,
        bos_token: bosToken,
        eos_token: eosToken,
      });
    } catch (error) {
      // Templates refuse a conversation through raise_exception (a plain Error here), e.g. for
      // roles that do not alternate; a runtime error of the template itself looks the same.
      throw new ChatTemplateError(`the chat template failed to render these messages: ${describeError(error)}`, { cause: error });
    }
  }
}
