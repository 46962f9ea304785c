// Chat templates used by the papers, implemented natively (no Jinja engine). Each renders a
// message list to the text the model sees, with the generation prompt appended.
//   qwen3          Qwen3's template with thinking (the generation prompt ends
//   "<|im_start|>assistant\n") qwen3-nothink  Qwen3 with enable_thinking=false:
//   "...assistant\n<think>\n\n</think>\n\n"
//                  (the BuPO Qwen3 runs, papers.md §1.8)
//   chatml         plain ChatML: "<|im_start|>{role}\n{content}<|im_end|>\n"
//   smollm2        ChatML with SmolLM2-Instruct's default system prompt when none is given
//   llama3         Llama 3:
//   "<|begin_of_text|><|start_header_id|>{role}<|end_header_id|>\n\n{content}<|eot_id|>" orz the
//   Open-Reasoner-Zero plain-text prompt (OctoThinker runs, papers.md §1.8)
#pragma once
#include <string>
#include <vector>

#include "io/json_util.hpp"

namespace bupo {

struct ChatMessage {
  std::string role;  // system | user | assistant
  std::string content;
};

std::vector<std::string> chat_template_names();
// Throws naming the template or the message at fault.
std::string render_chat(const std::string& tmpl, const std::vector<ChatMessage>& messages,
                        bool add_generation_prompt = true);
// A verl-style prompt: a list of {"role", "content"} objects, or a plain string (one user message).
std::vector<ChatMessage> chat_messages_from_json(const json& prompt, const std::string& where);

}  // namespace bupo
