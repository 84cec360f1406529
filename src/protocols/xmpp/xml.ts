/**
 * A small immutable-enough XML element tree: what the parser produces and what stanzas are built from.
 * Each element records its resolved namespace; serialisation writes an `xmlns` only where it differs
 * from the parent's, so a stanza can be re-serialised into another stream (or a WebSocket frame) intact.
 */
export type XmlNode = XmlElement | string;

export class XmlElement {
  constructor(
    readonly name: string,
    readonly ns: string,
    readonly attrs: Record<string, string> = {},
    readonly children: XmlNode[] = [],
  ) {}

  attr(name: string): string | undefined {
    return Object.hasOwn(this.attrs, name) ? this.attrs[name] : undefined;
  }

  /** The first child element named `name` (and in `ns` if given). */
  child(name: string, ns?: string): XmlElement | undefined {
    for (const c of this.children) {
      if (typeof c !== 'string' && c.name === name && (ns === undefined || c.ns === ns)) return c;
    }
    return undefined;
  }

  elements(): XmlElement[] {
    return this.children.filter((c): c is XmlElement => typeof c !== 'string');
  }

  text(): string {
    let s = '';
    for (const c of this.children) if (typeof c === 'string') s += c;
    return s;
  }

  childText(name: string, ns?: string): string | undefined {
    return this.child(name, ns)?.text();
  }

  /** A shallow copy with attributes replaced/added (undefined removes one). */
  withAttrs(patch: Record<string, string | undefined>): XmlElement {
    const attrs: Record<string, string> = { ...this.attrs };
    for (const [k, v] of Object.entries(patch)) {
      if (v === undefined) delete attrs[k];
      else attrs[k] = v;
    }
    return new XmlElement(this.name, this.ns, attrs, this.children);
  }

  withChild(child: XmlElement): XmlElement {
    return new XmlElement(this.name, this.ns, this.attrs, [...this.children, child]);
  }

  toString(): string {
    return serialise(this, '');
  }
}

/** Builds an element: `el('iq', NS.client, {type: 'result'}, el('query', NS.roster))`. */
export function el(name: string, ns: string, attrs: Record<string, string | number | undefined | null> = {}, ...children: Array<XmlNode | null | undefined | false>): XmlElement {
  const a: Record<string, string> = {};
  for (const [k, v] of Object.entries(attrs)) if (v !== undefined && v !== null) a[k] = String(v);
  return new XmlElement(name, ns, a, children.filter((c): c is XmlNode => c !== null && c !== undefined && c !== false));
}

const TEXT_ESC: Record<string, string> = { '&': '&amp;', '<': '&lt;', '>': '&gt;' };
const ATTR_ESC: Record<string, string> = { '&': '&amp;', '<': '&lt;', '>': '&gt;', "'": '&apos;', '"': '&quot;' };

export function escapeText(s: string): string {
  return s.replace(/[&<>]/g, (c) => TEXT_ESC[c] as string);
}

export function escapeAttr(s: string): string {
  return s.replace(/[&<>'"]/g, (c) => ATTR_ESC[c] as string);
}

function serialise(e: XmlElement, parentNs: string): string {
  let s = `<${e.name}`;
  if (e.ns !== parentNs) s += ` xmlns='${escapeAttr(e.ns)}'`;
  for (const [k, v] of Object.entries(e.attrs)) {
    if (k === 'xmlns') continue;
    s += ` ${k}='${escapeAttr(v)}'`;
  }
  if (e.children.length === 0) return s + '/>';
  s += '>';
  for (const c of e.children) s += typeof c === 'string' ? escapeText(c) : serialise(c, e.ns);
  return `${s}</${e.name}>`;
}
