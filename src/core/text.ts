/**
 * Text that users set (status, roster names and groups) reaches XMPP clients inside XML, and XML 1.0
 * cannot carry C0 control characters (other than tab, newline, carriage return), U+FFFE/U+FFFF or
 * unpaired surrogates: one such character in a status would end every watching XMPP client's stream
 * with not-well-formed. They are refused where the text enters, whichever protocol it comes from.
 */
// eslint-disable-next-line no-control-regex
const NOT_XML = /[\u0000-\u0008\u000B\u000C\u000E-\u001F\uFFFE\uFFFF]|[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;

export function isXmlSafeText(s: string): boolean {
  return !NOT_XML.test(s);
}
