// Server-sent events from a fetch body: push text in, get complete events out.

export class SSEParser {
  constructor() {
    this.buffer = '';
  }

  /** Events completed by this piece of text: {comment} for ": ping", {data} otherwise. */
  push(text) {
    this.buffer += text.replace(/\r\n?/g, '\n');
    const events = [];
    let end;
    while ((end = this.buffer.indexOf('\n\n')) !== -1) {
      const block = this.buffer.slice(0, end);
      this.buffer = this.buffer.slice(end + 2);
      const data = [];
      for (const line of block.split('\n')) {
        if (line.startsWith(':')) events.push({ comment: line.slice(1).trim() });
        else if (line.startsWith('data:')) data.push(line.slice(5).replace(/^ /, ''));
      }
      if (data.length) events.push({ data: data.join('\n') });
    }
    return events;
  }
}
