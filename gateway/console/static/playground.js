// The playground: a chat request streamed through /v1/chat/completions, as any client would.
//
// Job state, as the stream shows it: "sending" until the answer's headers arrive; the
// gateway sends them with its first event, so headers (carrying x-job-id) followed by a
// keep-alive comment and no text mean the job waits in the grid's queue: "queued". The page
// states a 2 s read timeout (x-request-timeout), so the gateway's keep-alives come every
// second while the job waits. First text: "generating"; [DONE]: "done".

import { $, el } from './dom.js';
import { authHeaders } from './api.js';
import { SSEParser } from './sse.js';
import { snippet } from './snippets.js';

const READ_TIMEOUT_SECONDS = '2';

export class Playground {
  constructor() {
    this.messages = [];
    this.controller = null;
    this.lastRequest = null;
    this.form = $('pg-form');
    this.form.addEventListener('submit', (event) => {
      event.preventDefault();
      this.send();
    });
    $('pg-message').addEventListener('keydown', (event) => {
      if (event.key === 'Enter' && (event.ctrlKey || event.metaKey)) {
        event.preventDefault();
        this.send();
      }
    });
    $('pg-stop-button').addEventListener('click', () => this.stop());
    $('pg-clear').addEventListener('click', () => this.clear());
    for (const button of document.querySelectorAll('[data-copy]')) {
      button.addEventListener('click', () => this.copy(button.dataset.copy));
    }
  }

  setModels(models) {
    const select = $('pg-model');
    const previous = select.value;
    select.replaceChildren(...models.map((m) => el('option', { value: m.id }, m.id)));
    if (models.some((m) => m.id === previous)) select.value = previous;
  }

  setState(state, detail) {
    const node = $('pg-state');
    node.dataset.state = state;
    node.textContent = detail ? `${state} (${detail})` : state;
  }

  clear() {
    this.stop();
    this.messages = [];
    $('pg-conversation').replaceChildren();
    $('pg-answer').replaceChildren();
    $('pg-tool-calls').hidden = true;
    this.setState('idle');
  }

  /** The request the form describes, or throws an Error naming the bad field. */
  request(text) {
    const messages = [];
    const system = $('pg-system').value.trim();
    if (system) messages.push({ role: 'system', content: system });
    messages.push(...this.messages, { role: 'user', content: text });
    const body = {
      model: $('pg-model').value,
      messages,
      stream: true,
      stream_options: { include_usage: true },
    };
    const max = $('pg-max').value.trim();
    if (max) body.max_tokens = Number(max);
    const stops = $('pg-stop').value.split(',').map((s) => s.trim()).filter(Boolean);
    if (stops.length) body.stop = stops;
    const tools = $('pg-tools').value.trim();
    if (tools) {
      try {
        body.tools = JSON.parse(tools);
      } catch (error) {
        throw new Error(`Tools are not valid JSON: ${error.message}`);
      }
    }
    const schema = $('pg-schema').value.trim();
    if (schema) {
      let parsed;
      try {
        parsed = JSON.parse(schema);
      } catch (error) {
        throw new Error(`The JSON schema is not valid JSON: ${error.message}`);
      }
      body.response_format = { type: 'json_schema', json_schema: { name: 'answer', schema: parsed } };
    }
    return body;
  }

  showTurn(role, text) {
    $('pg-conversation').append(
      el('li', { class: `turn ${role}` }, el('span', { class: 'role' }, role), el('span', { class: 'text' }, text)),
    );
  }

  async send() {
    if (this.controller) return;
    const box = $('pg-message');
    const text = box.value.trim();
    $('pg-error').textContent = '';
    if (!text) {
      $('pg-error').textContent = 'Write a message first.';
      return;
    }
    let body;
    try {
      body = this.request(text);
    } catch (error) {
      $('pg-error').textContent = error.message;
      return;
    }
    this.lastRequest = body;
    this.showTurn('user', text);
    this.messages.push({ role: 'user', content: text });
    box.value = '';
    const answer = $('pg-answer');
    const output = document.createTextNode('');
    answer.replaceChildren(output);
    const calls = $('pg-tool-calls');
    calls.hidden = true;
    calls.textContent = '';
    $('pg-ttft').textContent = '–';
    $('pg-tokens').textContent = '–';
    $('pg-job').textContent = '–';
    this.setState('sending');
    const controller = new AbortController();
    this.controller = controller;
    $('pg-send').disabled = true;
    $('pg-stop-button').disabled = false;
    const started = performance.now();
    const run = { text: '', toolCalls: [], finish: null, usage: null, ended: false };
    try {
      const response = await fetch('/v1/chat/completions', {
        method: 'POST',
        headers: authHeaders({
          'Content-Type': 'application/json',
          'x-request-timeout': READ_TIMEOUT_SECONDS,
        }),
        body: JSON.stringify(body),
        signal: controller.signal,
        cache: 'no-store',
        credentials: 'omit',
      });
      $('pg-job').textContent = response.headers.get('x-job-id') || '–';
      if (!response.ok) {
        let message = `HTTP ${response.status}`;
        try {
          message = (await response.json()).error.message || message;
        } catch {
          // keep the status line
        }
        throw new Error(message);
      }
      this.setState('queued');
      const reader = response.body.getReader();
      const decoder = new TextDecoder();
      const parser = new SSEParser();
      while (!run.ended) {
        const { value, done } = await reader.read();
        if (done) break;
        for (const event of parser.push(decoder.decode(value, { stream: true }))) {
          this.handle(event, run, output, started);
        }
      }
      if (!run.ended) throw new Error('The stream ended before [DONE].');
      this.setState('done', run.finish || undefined);
    } catch (error) {
      if (controller.signal.aborted) this.setState('stopped');
      else {
        this.setState('error');
        $('pg-error').textContent = error.message;
      }
    } finally {
      this.controller = null;
      $('pg-send').disabled = false;
      $('pg-stop-button').disabled = true;
      if (run.text || run.toolCalls.length) {
        const message = { role: 'assistant', content: run.text };
        if (run.toolCalls.length) message.tool_calls = run.toolCalls;
        this.messages.push(message);
        this.showTurn('assistant', run.text || JSON.stringify(run.toolCalls));
      }
    }
  }

  handle(event, run, output, started) {
    if (event.comment !== undefined) return; // keep-alive: the state stays as it is
    if (event.data === '[DONE]') {
      run.ended = true;
      return;
    }
    let chunk;
    try {
      chunk = JSON.parse(event.data);
    } catch {
      return;
    }
    if (chunk.error) throw new Error(chunk.error.message || 'The stream failed.');
    if (chunk.usage) {
      const u = chunk.usage;
      $('pg-tokens').textContent = `${u.prompt_tokens} prompt + ${u.completion_tokens} completion`;
    }
    const choice = (chunk.choices || [])[0];
    if (!choice) return;
    const delta = choice.delta || {};
    if (delta.content || delta.tool_calls) {
      if (!run.text && !run.toolCalls.length) {
        $('pg-ttft').textContent = `${Math.round(performance.now() - started)} ms`;
        this.setState('generating');
      }
    }
    if (delta.content) {
      run.text += delta.content;
      output.appendData(delta.content);
    }
    for (const piece of delta.tool_calls || []) {
      if (piece.id) {
        run.toolCalls[piece.index] = {
          id: piece.id,
          type: 'function',
          function: { name: piece.function.name, arguments: '' },
        };
      }
      run.toolCalls[piece.index].function.arguments += piece.function.arguments || '';
      const calls = $('pg-tool-calls');
      calls.hidden = false;
      calls.textContent = JSON.stringify(run.toolCalls, null, 2);
    }
    if (choice.finish_reason) run.finish = choice.finish_reason;
  }

  stop() {
    if (this.controller) this.controller.abort();
  }

  async copy(kind) {
    let request = this.lastRequest;
    if (!request) {
      try {
        request = this.request($('pg-message').value.trim() || 'Hello!');
      } catch (error) {
        $('pg-error').textContent = error.message;
        return;
      }
    }
    const code = snippet(kind, `${window.location.origin}/v1`, request);
    const pre = $('pg-snippet');
    pre.hidden = false;
    pre.textContent = code;
    try {
      await navigator.clipboard.writeText(code);
    } catch {
      // no clipboard permission: the code is shown to copy by hand
    }
  }
}
