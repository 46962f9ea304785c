#include "tokenizer/chat_template.hpp"

#include "core/error.hpp"

namespace bupo {
namespace {

std::string strip(const std::string& s, const char* chars = " \t\n\r") {
  const size_t b = s.find_first_not_of(chars);
  if (b == std::string::npos) return "";
  return s.substr(b, s.find_last_not_of(chars) - b + 1);
}
std::string lstrip(const std::string& s, const char* chars) {
  const size_t b = s.find_first_not_of(chars);
  return b == std::string::npos ? "" : s.substr(b);
}
std::string rstrip(const std::string& s, const char* chars) {
  const size_t e = s.find_last_not_of(chars);
  return e == std::string::npos ? "" : s.substr(0, e + 1);
}

void check_roles(const std::vector<ChatMessage>& ms, const std::string& tmpl) {
  for (size_t i = 0; i < ms.size(); ++i)
    BUPO_CHECK(ms[i].role == "system" || ms[i].role == "user" || ms[i].role == "assistant",
               "chat template '", tmpl, "': message ", i, " has role '", ms[i].role,
               "' (expected system, user or assistant)");
}

// Qwen3's tokenizer_config.json template (tools and tool messages aside).
std::string qwen3(const std::vector<ChatMessage>& ms, bool gen, bool thinking) {
  std::string out;
  size_t start = 0;
  if (!ms.empty() && ms[0].role == "system") {
    out += "<|im_start|>system\n" + ms[0].content + "<|im_end|>\n";
    start = 1;
  }
  // index of the last user query
  size_t last_query = ms.empty() ? 0 : ms.size() - 1;
  for (size_t i = ms.size(); i-- > 0;)
    if (ms[i].role == "user") {
      last_query = i;
      break;
    }
  for (size_t i = start; i < ms.size(); ++i) {
    const ChatMessage& m = ms[i];
    if (m.role == "user" || m.role == "system") {
      out += "<|im_start|>" + m.role + "\n" + m.content + "<|im_end|>\n";
      continue;
    }
    std::string content = m.content, reasoning;
    if (const size_t p = content.rfind("</think>"); p != std::string::npos) {
      std::string before = content.substr(0, content.find("</think>"));
      content = lstrip(content.substr(p + 8), "\n");
      if (const size_t q = before.rfind("<think>"); q != std::string::npos)
        before = before.substr(q + 7);
      reasoning = lstrip(rstrip(before, "\n"), "\n");
    }
    const bool last = i + 1 == ms.size();
    if (i > last_query && (last || !reasoning.empty()))
      out += "<|im_start|>assistant\n<think>\n" + strip(reasoning, "\n") + "\n</think>\n\n" +
             lstrip(content, "\n");
    else
      out += "<|im_start|>assistant\n" + content;
    out += "<|im_end|>\n";
  }
  if (gen) {
    out += "<|im_start|>assistant\n";
    if (!thinking) out += "<think>\n\n</think>\n\n";
  }
  return out;
}

std::string chatml(const std::vector<ChatMessage>& ms, bool gen, const char* default_system) {
  std::string out;
  if (default_system && (ms.empty() || ms[0].role != "system"))
    out += std::string("<|im_start|>system\n") + default_system + "<|im_end|>\n";
  for (const auto& m : ms) out += "<|im_start|>" + m.role + "\n" + m.content + "<|im_end|>\n";
  if (gen) out += "<|im_start|>assistant\n";
  return out;
}

std::string llama3(const std::vector<ChatMessage>& ms, bool gen) {
  std::string out = "<|begin_of_text|>";
  for (const auto& m : ms)
    out +=
        "<|start_header_id|>" + m.role + "<|end_header_id|>\n\n" + strip(m.content) + "<|eot_id|>";
  if (gen) out += "<|start_header_id|>assistant<|end_header_id|>\n\n";
  return out;
}

// Open-Reasoner-Zero's prompt; system messages are ignored, the last user message is the problem.
std::string orz(const std::vector<ChatMessage>& ms, bool gen) {
  std::string problem;
  for (const auto& m : ms)
    if (m.role == "user") problem = m.content;
  BUPO_CHECK(!problem.empty(), "chat template 'orz': needs a user message (the problem)");
  std::string out =
      "A conversation between User and Assistant. The User asks a question, and the Assistant "
      "solves it. The "
      "Assistant first thinks about the reasoning process in the mind and then provides the User "
      "with the answer. "
      "The reasoning process is enclosed within <think> </think> and answer is enclosed within "
      "<answer> </answer> "
      "tags, respectively, i.e., <think> reasoning process here </think> <answer> answer here "
      "</answer>. User: You "
      "must put your answer inside <answer> </answer> tags, i.e., <answer> answer here </answer>. "
      "And your final "
      "answer will be extracted automatically by the \\boxed{} tag.\nThis is the problem:\n" +
      problem + "\nAssistant:";
  if (gen) out += " <think>";
  return out;
}

}  // namespace

std::vector<std::string> chat_template_names() {
  return {"qwen3", "qwen3-nothink", "chatml", "smollm2", "llama3", "orz"};
}

std::string render_chat(const std::string& tmpl, const std::vector<ChatMessage>& ms, bool gen) {
  check_roles(ms, tmpl);
  if (tmpl == "qwen3") return qwen3(ms, gen, true);
  if (tmpl == "qwen3-nothink") return qwen3(ms, gen, false);
  if (tmpl == "chatml") return chatml(ms, gen, nullptr);
  if (tmpl == "smollm2")
    return chatml(ms, gen, "You are a helpful AI assistant named SmolLM, trained by Hugging Face");
  if (tmpl == "llama3") return llama3(ms, gen);
  if (tmpl == "orz") return orz(ms, gen);
  std::string names;
  for (const auto& n : chat_template_names()) names += (names.empty() ? "" : ", ") + n;
  fail("unknown chat template '", tmpl, "' (expected one of: ", names, ")");
}

std::vector<ChatMessage> chat_messages_from_json(const json& prompt, const std::string& where) {
  if (prompt.is_string()) return {{"user", prompt.get<std::string>()}};
  BUPO_CHECK(prompt.is_array() && !prompt.empty(), where,
             ": field 'prompt': expected a string or a non-empty list of {\"role\", \"content\"}");
  std::vector<ChatMessage> out;
  for (size_t i = 0; i < prompt.size(); ++i) {
    const json& m = prompt[i];
    BUPO_CHECK(m.is_object() && m.contains("role") && m["role"].is_string() &&
                   m.contains("content") && m["content"].is_string(),
               where, ": field 'prompt'[", i,
               "]: expected {\"role\": string, \"content\": string}");
    out.push_back({m["role"].get<std::string>(), m["content"].get<std::string>()});
  }
  return out;
}

}  // namespace bupo
