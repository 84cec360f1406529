import { StanzaError } from '../../../protocols/xmpp/errors.js';
import { el, type XmlElement } from '../../../protocols/xmpp/xml.js';

/** XEP-0004 data forms, as far as XEP-0357 publish-options and XEP-0050 commands need them. */
export const NS_DATA = 'jabber:x:data';

/** Bounds on a submitted form: a form is a client's input and is stored (publish-options), so it is kept small. */
const MAX_FIELDS = 32;
const MAX_VALUES = 16;
const MAX_VAR = 256;
const MAX_VALUE = 4096;

export interface SubmittedForm {
  /** The hidden FORM_TYPE field's value, if any. */
  readonly formType: string | null;
  /** Fields other than FORM_TYPE, by var, with their values in order. */
  readonly fields: ReadonlyMap<string, readonly string[]>;
}

const bad = (what: string, text: string): StanzaError => new StanzaError('bad-request', `${what}: ${text}`);

/**
 * Reads a `<x xmlns='jabber:x:data' type='submit'>`: every field needs a var, a var appears once, and
 * the form stays within the bounds above. Anything else is a bad-request naming what is wrong.
 */
export function readSubmittedForm(x: XmlElement, what: string): SubmittedForm {
  if (x.name !== 'x' || x.ns !== NS_DATA) throw bad(what, 'expected a jabber:x:data form');
  const type = x.attr('type');
  if (type !== 'submit') throw bad(what, `the form's type must be submit (got ${JSON.stringify(type ?? null)?.slice(0, 40)})`);
  const fields = new Map<string, string[]>();
  let formType: string | null = null;
  const children = x.elements();
  if (children.filter((c) => c.name === 'field').length > MAX_FIELDS) throw bad(what, `a form has at most ${MAX_FIELDS} fields`);
  for (const f of children) {
    if (f.name === 'title' || f.name === 'instructions') continue;
    if (f.name !== 'field' || f.ns !== NS_DATA) throw bad(what, `unexpected <${f.name.slice(0, 40)}/> in the form`);
    const v = f.attr('var');
    if (v === undefined || v === '') throw bad(what, 'every field needs a var');
    if (v.length > MAX_VAR) throw bad(what, `a field var is at most ${MAX_VAR} characters`);
    if (fields.has(v) || (v === 'FORM_TYPE' && formType !== null)) throw bad(what, `field ${v.slice(0, 64)} appears twice`);
    const values = f.elements().filter((c) => c.name === 'value');
    if (values.length > MAX_VALUES) throw bad(what, `field ${v.slice(0, 64)} has more than ${MAX_VALUES} values`);
    const texts = values.map((c) => c.text());
    for (const t of texts) if (t.length > MAX_VALUE) throw bad(what, `a value of field ${v.slice(0, 64)} is longer than ${MAX_VALUE} characters`);
    if (v === 'FORM_TYPE') {
      if (texts.length !== 1) throw bad(what, 'FORM_TYPE needs exactly one value');
      formType = texts[0] as string;
    } else fields.set(v, texts);
  }
  return { formType, fields };
}

/** The single value of a field, or undefined when absent; several values are refused. */
export function single(form: SubmittedForm, v: string, what: string): string | undefined {
  const values = form.fields.get(v);
  if (values === undefined || values.length === 0) return undefined;
  if (values.length > 1) throw bad(what, `field ${v} takes one value`);
  return values[0]?.trim();
}

export function field(v: string, value: string | null, attrs: { type?: string; label?: string; required?: boolean } = {}): XmlElement {
  return el('field', NS_DATA, { var: v, type: attrs.type, label: attrs.label }, attrs.required ? el('required', NS_DATA) : null, value !== null ? el('value', NS_DATA, {}, value) : null);
}
