import { StringDecoder } from 'node:string_decoder';
import { SaxesParser, type SaxesTagNS } from 'saxes';
import { StreamError } from './errors.js';
import { escapeAttr, XmlElement } from './xml.js';

export interface XmlLimits {
  /** Characters a single stanza (or the stream header, or a WebSocket frame) may take. */
  readonly maxStanzaChars: number;
  /** Element nesting allowed inside a stanza. */
  readonly maxDepth: number;
  readonly maxAttributes: number;
}

export interface StreamParserEvents {
  streamStart(root: XmlElement): void;
  stanza(stanza: XmlElement): void;
  streamEnd(): void;
}

/** Bytes written to saxes at once: the size limit is checked between slices, before saxes buffers more. */
const SLICE = 16 * 1024;

/** Shared by every element without attributes (most stanza children); nothing writes to `attrs`. */
const NO_ATTRS: Record<string, string> = Object.freeze({}) as Record<string, string>;

function toElement(tag: SaxesTagNS): XmlElement {
  let attrs = NO_ATTRS;
  const source = tag.attributes;
  for (const key in source) {
    const a = source[key] as { prefix: string; name: string; value: string };
    // Namespace declarations are re-derived from each element's namespace when serialising.
    // (the default `xmlns` is kept for the stream header check; the serialiser never writes it from attrs).
    if (a.prefix === 'xmlns') continue;
    if (attrs === NO_ATTRS) attrs = {};
    attrs[a.name] = a.value;
  }
  return new XmlElement(tag.local, tag.uri, attrs, []);
}

/**
 * The restrictions of RFC 6120 §11.1 on a saxes parser: no DTD, comments or processing instructions
 * (restricted-xml), no entities other than the five predefined ones (saxes rejects undefined entity
 * references, and never reads a DTD's entity declarations), and the size, depth and attribute limits.
 */
function restrict(parser: SaxesParser<{ xmlns: true }>, limits: XmlLimits, depthOf: () => number): void {
  parser.on('doctype', () => {
    throw new StreamError('restricted-xml', 'DTDs are not allowed');
  });
  parser.on('comment', () => {
    throw new StreamError('restricted-xml', 'comments are not allowed');
  });
  parser.on('processinginstruction', () => {
    throw new StreamError('restricted-xml', 'processing instructions are not allowed');
  });
  let attributes = 0;
  parser.on('opentagstart', () => {
    attributes = 0;
    if (depthOf() >= limits.maxDepth) throw new StreamError('policy-violation', `elements nested deeper than ${limits.maxDepth}`);
  });
  parser.on('attribute', () => {
    // Counted as they arrive (in namespace mode saxes fills the tag's map only once the tag ends), so
    // a tag with a million attributes fails at the limit, not after buffering them all.
    if (++attributes > limits.maxAttributes) throw new StreamError('policy-violation', `more than ${limits.maxAttributes} attributes on one element`);
  });
  parser.on('error', (e) => {
    throw e instanceof StreamError ? e : new StreamError('not-well-formed', e.message.split('\n')[0]);
  });
}

function rejectDeclarations(text: string): void {
  // Caught here too, before saxes reads a whole DTD: its doctype event only fires at the end.
  if (text.includes('<!DOCTYPE') || text.includes('<!ENTITY')) throw new StreamError('restricted-xml', 'DTDs and entity declarations are not allowed');
}

/**
 * The incremental parser of one TCP XML stream (RFC 6120 §4): the root `<stream:stream>` is announced
 * when its start tag ends, and each child of the root as one complete stanza. A stream restart (after
 * STARTTLS or SASL) needs a new parser. Errors are thrown as StreamError from `write`.
 *
 * A saxes parser holds about 3 KB once it has parsed a stanza, a quarter of what an idle session
 * costs in all. Most sessions are idle most of the time, so between stanzas `rest()` lets the parser
 * go; the next bytes get a fresh one, primed with a start tag that declares the namespaces the stream
 * header declared, so stanzas parse exactly as they would have in the original context.
 */
export class StreamParser {
  private parser: SaxesParser<{ xmlns: true }> | null;
  private readonly decoder = new StringDecoder('utf8');
  private stack: XmlElement[] = [];
  private stanzaStart = 0;
  private lastChar = '>';
  /** A start tag re-declaring the root's namespace bindings, written to a fresh parser after a rest. */
  private rootContext = '';
  private replaying = false;
  /** Epoch ms since which a stanza (or the header) has been started but not finished; null when idle. */
  partialSince: number | null = null;
  /**
   * Between stanzas only whitespace may come before the next `<`. saxes reports other text only once
   * that `<` arrives, and after an `&` it reads an entity name until `;` without bound, silently
   * swallowing every stanza after it; so the gap after each stanza is checked here. `gapAt` is where
   * the gap starts in the slice being written (0 when it began in an earlier slice), -1 when none is open.
   */
  private gapAt = -1;

  constructor(
    private readonly limits: XmlLimits,
    private readonly events: StreamParserEvents,
  ) {
    this.parser = this.createParser();
  }

  private createParser(): SaxesParser<{ xmlns: true }> {
    const p = new SaxesParser({ xmlns: true, position: true });
    restrict(p, this.limits, () => Math.max(0, this.stack.length - 1));
    p.on('opentag', (tag) => {
      if (this.replaying) {
        // The root again, after a rest: nothing to announce, the stream goes on.
        this.stanzaStart = p.position;
        this.gapAt = 0;
        return;
      }
      const e = toElement(tag);
      if (this.stack.length === 0) {
        this.stack.push(e);
        this.stanzaStart = p.position;
        this.rootContext = contextTag(tag);
        this.gapAt = chunkIndex(p);
        this.events.streamStart(e);
        return;
      }
      const parent = this.stack[this.stack.length - 1] as XmlElement;
      if (this.stack.length > 1) parent.children.push(e);
      this.stack.push(e);
      if (tag.isSelfClosing) return; // closetag follows and pops it
    });
    p.on('closetag', () => {
      const e = this.stack.pop() as XmlElement;
      if (this.stack.length === 0) {
        this.events.streamEnd();
        return;
      }
      if (this.stack.length === 1) {
        this.stanzaStart = p.position;
        this.gapAt = chunkIndex(p);
        this.events.stanza(e);
      }
    });
    p.on('text', (t) => {
      // Whitespace between stanzas (keepalives) belongs to no stanza.
      if (this.stack.length > 1) (this.stack[this.stack.length - 1] as XmlElement).children.push(t);
      else if (t.trim() !== '') throw new StreamError('not-well-formed', 'text outside a stanza');
    });
    p.on('cdata', (t) => {
      if (this.stack.length > 1) (this.stack[this.stack.length - 1] as XmlElement).children.push(t);
    });
    return p;
  }

  /**
   * Lets the parser go if the stream is between stanzas (after the header, nothing pending); the next
   * `write` brings a fresh one. Returns whether it rested.
   */
  rest(): boolean {
    if (this.parser === null) return true;
    if (this.stack.length !== 1 || this.lastChar !== '>' || this.partialSince !== null) return false;
    this.parser = null;
    return true;
  }

  get resting(): boolean {
    return this.parser === null;
  }

  /** Feeds received bytes; throws StreamError on the first violation. */
  write(chunk: Buffer, now: number): void {
    const text = this.decoder.write(chunk);
    let parser = this.parser;
    if (parser === null) {
      parser = this.createParser();
      this.parser = parser;
      this.replaying = true;
      try {
        parser.write(this.rootContext);
      } finally {
        this.replaying = false;
      }
    }
    for (let i = 0; i < text.length; i += SLICE) {
      const slice = text.slice(i, i + SLICE);
      rejectDeclarations(slice);
      if (this.gapAt >= 0) this.gapAt = 0;
      parser.write(slice);
      if (this.gapAt >= 0 && this.stack.length === 1) {
        const rest = slice.slice(this.gapAt);
        const lt = rest.indexOf('<');
        if ((lt >= 0 ? rest.slice(0, lt) : rest).trim() !== '') throw new StreamError('not-well-formed', 'text outside a stanza');
        if (lt >= 0) this.gapAt = -1;
      }
      if (parser.position - this.stanzaStart > this.limits.maxStanzaChars) {
        throw new StreamError('policy-violation', `stanza larger than ${this.limits.maxStanzaChars} characters`);
      }
    }
    const trimmed = text.trimEnd();
    if (trimmed !== '') this.lastChar = trimmed[trimmed.length - 1] as string;
    const partial = this.stack.length !== 1 || this.lastChar !== '>';
    if (!partial) this.partialSince = null;
    else this.partialSince ??= now;
  }
}

/** Where saxes is in the chunk it was last given (just past the `>` in a tag's event). */
function chunkIndex(p: SaxesParser<{ xmlns: true }>): number {
  return (p as unknown as { i: number }).i;
}

/** A start tag with the root's name and every namespace binding it declared (none of its attributes). */
function contextTag(tag: SaxesTagNS): string {
  let s = `<${tag.name}`;
  for (const [prefix, uri] of Object.entries(tag.ns)) s += prefix === '' ? ` xmlns='${escapeAttr(uri)}'` : ` xmlns:${prefix}='${escapeAttr(uri)}'`;
  return s + '>';
}

/**
 * Parses one WebSocket frame of RFC 7395 framing: a complete XML document holding one element (an
 * `<open/>`, a `<close/>` or a stanza), with the same restrictions as a TCP stream.
 */
export function parseFrame(text: string, limits: XmlLimits): XmlElement {
  if (text.length > limits.maxStanzaChars) throw new StreamError('policy-violation', `frame larger than ${limits.maxStanzaChars} characters`);
  rejectDeclarations(text);
  const parser = new SaxesParser({ xmlns: true, position: false });
  const stack: XmlElement[] = [];
  let root: XmlElement | null = null;
  restrict(parser, limits, () => stack.length);
  parser.on('opentag', (tag) => {
    const e = toElement(tag);
    const parent = stack[stack.length - 1];
    if (parent) parent.children.push(e);
    else root = e;
    stack.push(e);
  });
  parser.on('closetag', () => {
    stack.pop();
  });
  parser.on('text', (t) => {
    const top = stack[stack.length - 1];
    if (top) top.children.push(t);
  });
  parser.on('cdata', (t) => {
    const top = stack[stack.length - 1];
    if (top) top.children.push(t);
  });
  parser.write(text).close();
  if (root === null) throw new StreamError('not-well-formed', 'empty frame');
  return root;
}
