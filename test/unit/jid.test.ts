import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { PresenceError } from '../../src/core/errors.js';
import { bareOf, domainOf, isValidAccountJid, localOf, parseAccountJid, parseJid, parseResource } from '../../src/core/jid.js';

function assertBadJid(fn: () => unknown, messagePart?: RegExp): void {
  assert.throws(fn, (e: unknown) => {
    assert.ok(e instanceof PresenceError, `expected PresenceError, got ${String(e)}`);
    assert.equal(e.code, 'bad-jid');
    if (messagePart) assert.match(e.message, messagePart);
    return true;
  });
}

describe('parseJid: structure (RFC 7622 §3.1)', () => {
  it('parses a full JID', () => {
    assert.deepEqual(parseJid('juliet@example.com/balcony'), {
      local: 'juliet',
      domain: 'example.com',
      resource: 'balcony',
      bare: 'juliet@example.com',
      full: 'juliet@example.com/balcony',
    });
  });

  it('parses a bare JID', () => {
    const j = parseJid('juliet@example.com');
    assert.equal(j.resource, null);
    assert.equal(j.bare, 'juliet@example.com');
    assert.equal(j.full, 'juliet@example.com');
  });

  it('accepts a bare domain, with and without a resource', () => {
    const d = parseJid('example.com');
    assert.equal(d.local, '');
    assert.equal(d.bare, 'example.com');
    const dr = parseJid('example.com/foo');
    assert.equal(dr.local, '');
    assert.equal(dr.resource, 'foo');
    assert.equal(dr.full, 'example.com/foo');
  });

  it("the resource is everything after the first '/', even '@' and '/'", () => {
    const j = parseJid('juliet@example.com/foo@bar/baz');
    assert.equal(j.local, 'juliet');
    assert.equal(j.domain, 'example.com');
    assert.equal(j.resource, 'foo@bar/baz');
    const d = parseJid('example.com/juliet@example.net');
    assert.equal(d.local, '', "an '@' after the first '/' is not a local separator");
    assert.equal(d.resource, 'juliet@example.net');
  });

  it('rejects empty parts', () => {
    assertBadJid(() => parseJid(''), /empty/);
    assertBadJid(() => parseJid('@example.com'), /localpart/);
    assertBadJid(() => parseJid('juliet@example.com/'), /resourcepart/);
    assertBadJid(() => parseJid('juliet@'), /domainpart/);
    assertBadJid(() => parseJid('/res'), /domainpart/);
    assertBadJid(() => parseJid('juliet@/res'), /domainpart/);
  });

  it('rejects non-strings with bad-jid rather than crashing', () => {
    assertBadJid(() => parseJid(undefined as unknown as string));
    assertBadJid(() => parseJid(42 as unknown as string));
    assertBadJid(() => parseJid(null as unknown as string));
  });
});

describe('parseJid: normalisation', () => {
  it('case-folds local and domain, keeps resource case', () => {
    const j = parseJid('Juliet@Example.COM/Balcony');
    assert.equal(j.local, 'juliet');
    assert.equal(j.domain, 'example.com');
    assert.equal(j.resource, 'Balcony');
    assert.equal(j.full, 'juliet@example.com/Balcony');
  });

  it('case-folds non-ASCII letters', () => {
    assert.equal(parseJid('ÇAĞRI@ÖRNEK.com').bare, 'çağri@örnek.com');
    assert.equal(parseJid('ДМИТРИЙ@example.com').local, 'дмитрий');
  });

  it('NFKC folds fullwidth letters in local and domain', () => {
    const j = parseJid('ｊｕｌｉｅｔ@ｅｘａｍｐｌｅ.ｃｏｍ');
    assert.equal(j.bare, 'juliet@example.com');
    // Fullwidth capitals fold to width and then to lower case.
    assert.equal(parseJid('ＪＵＬＩＥＴ@example.com').local, 'juliet');
  });

  it('NFKC folds compatibility characters (ligature, superscript)', () => {
    assert.equal(parseJid('ﬁsh@example.com').local, 'fish');
    assert.equal(parseJid('x²@example.com').local, 'x2');
  });

  it('NFC (not NFKC) and no case folding for the resource', () => {
    const decomposed = 'Cafe\u0301';
    const j = parseJid(`a@example.com/${decomposed}`);
    assert.equal(j.resource, 'Caf\u00e9');
    assert.equal(parseJid('a@example.com/ＡＢ').resource, 'ＡＢ', 'fullwidth stays fullwidth in a resource');
  });

  it('canonically equivalent localparts compare equal', () => {
    assert.equal(parseJid('cafe\u0301@example.com').bare, parseJid('caf\u00e9@example.com').bare);
  });

  it('removes one trailing dot from the domain', () => {
    assert.equal(parseJid('juliet@example.com.').domain, 'example.com');
    assert.equal(parseJid('example.com./r').full, 'example.com/r');
    assertBadJid(() => parseJid('juliet@example.com..'), /empty label/);
    assertBadJid(() => parseJid('juliet@.'), /domainpart is empty/);
  });

  it('maps ideographic and fullwidth full stops to dots in domains', () => {
    assert.equal(parseJid('a@example\u3002com').domain, 'example.com');
    assert.equal(parseJid('a@example\uFF0Ecom').domain, 'example.com');
    assert.equal(parseJid('a@example\uFF61com').domain, 'example.com');
  });
});

describe('parseJid: length limits (1023 bytes per part, UTF-8)', () => {
  it('localpart: 1023 bytes ok, 1024 rejected (ASCII)', () => {
    assert.equal(parseJid(`${'a'.repeat(1023)}@example.com`).local.length, 1023);
    assertBadJid(() => parseJid(`${'a'.repeat(1024)}@example.com`), /localpart is 1024 bytes/);
  });

  it('localpart: counts UTF-8 bytes, not characters', () => {
    // 'é' is 2 bytes; 511 of them + 1 ASCII = 1023 bytes.
    assert.ok(parseJid(`${'é'.repeat(511)}a@example.com`));
    assertBadJid(() => parseJid(`${'é'.repeat(512)}@example.com`), /1024 bytes/);
    // '中' is 3 bytes: 341 × 3 = 1023, 342 × 3 = 1026.
    assert.ok(parseJid(`${'中'.repeat(341)}@example.com`));
    assertBadJid(() => parseJid(`${'中'.repeat(342)}@example.com`), /1026 bytes/);
    // An astral character is 4 bytes (two UTF-16 units): 255 × 4 + 3 = 1023.
    assert.ok(parseJid(`${'😀'.repeat(255)}abc@example.com`));
    assertBadJid(() => parseJid(`${'😀'.repeat(256)}@example.com`), /1024 bytes/);
  });

  it('localpart length is measured after normalisation', () => {
    // 'ａ' (fullwidth) is 3 bytes but folds to 'a' (1 byte).
    assert.equal(parseJid(`${'ａ'.repeat(1023)}@example.com`).local, 'a'.repeat(1023));
  });

  it('resourcepart: 1023 bytes ok, 1024 rejected', () => {
    assert.ok(parseJid(`a@example.com/${'r'.repeat(1023)}`));
    assertBadJid(() => parseJid(`a@example.com/${'r'.repeat(1024)}`), /resourcepart is 1024 bytes/);
    assert.ok(parseJid(`a@example.com/${'中'.repeat(341)}`));
    assertBadJid(() => parseJid(`a@example.com/${'中'.repeat(342)}`), /resourcepart is 1026 bytes/);
  });

  it('domainpart: 1023 bytes ok, 1024 rejected', () => {
    // 15 labels of 63 chars + 14 dots = 959; add a 63-char label with its dot = 1023.
    const label = 'a'.repeat(63);
    const ok = Array.from({ length: 16 }, () => label).join('.');
    assert.equal(ok.length, 1023);
    assert.equal(parseJid(ok).domain, ok);
    const tooLong = `${ok}b`;
    assertBadJid(() => parseJid(tooLong));
    const longer = `${Array.from({ length: 15 }, () => label).join('.')}.b${label}`;
    assert.equal(longer.length, 1024);
    assertBadJid(() => parseJid(longer), /domainpart is 1024 bytes/);
  });
});

describe('parseJid: localpart characters (RFC 7622 §3.3.1)', () => {
  for (const ch of ['"', '&', "'", ':', '<', '>']) {
    it(`rejects ${JSON.stringify(ch)}`, () => {
      assertBadJid(() => parseJid(`jul${ch}iet@example.com`), /forbidden character/);
    });
  }

  it("rejects '@' and '/' that only appear after NFKC (fullwidth forms)", () => {
    assertBadJid(() => parseJid('jul\uFF20iet@example.com'), /forbidden character '@'/);
    assertBadJid(() => parseJid('jul\uFF0Fiet@example.com'), /forbidden character '\/'/);
    assertBadJid(() => parseJid('jul\uFF1Ciet@example.com'), /forbidden character '<'/);
  });

  for (const [name, ch] of [
    ['space', ' '],
    ['tab', '\t'],
    ['newline', '\n'],
    ['no-break space', '\u00A0'],
    ['ideographic space', '\u3000'],
    ['em space', '\u2003'],
  ] as const) {
    it(`rejects whitespace: ${name}`, () => {
      assertBadJid(() => parseJid(`jul${ch}iet@example.com`), /whitespace|control/);
    });
  }

  for (const [name, ch] of [
    ['NUL', '\u0000'],
    ['BEL', '\u0007'],
    ['DEL', '\u007F'],
    ['C1 0x85', '\u0085'],
  ] as const) {
    it(`rejects control character ${name}`, () => {
      assertBadJid(() => parseJid(`jul${ch}iet@example.com`), /control|whitespace/);
    });
  }

  it('rejects an unpaired surrogate', () => {
    assertBadJid(() => parseJid('jul\uD800iet@example.com'), /surrogate/);
  });

  it('accepts other punctuation and non-ASCII letters', () => {
    for (const local of ['a.b', 'a_b', 'a-b', 'a+tag', 'user!x', 'juliette', 'ромео', '中文', 'ñandú']) {
      assert.equal(parseJid(`${local}@example.com`).local, local.normalize('NFKC').toLowerCase());
    }
  });
});

describe('parseJid: domainpart', () => {
  it('rejects whitespace and control characters', () => {
    assertBadJid(() => parseJid('a@exa mple.com'), /whitespace/);
    assertBadJid(() => parseJid('a@example.com\t'), /whitespace|control/);
    assertBadJid(() => parseJid('a@exam\u0000ple.com'), /control/);
    assertBadJid(() => parseJid('a@exam\u0001ple.com'), /control/);
  });

  it('rejects empty labels', () => {
    assertBadJid(() => parseJid('a@example..com'), /empty label/);
    assertBadJid(() => parseJid('a@.example.com'), /empty label/);
  });

  it('rejects labels over 63 characters', () => {
    assert.ok(parseJid(`a@${'x'.repeat(63)}.com`));
    assertBadJid(() => parseJid(`a@${'x'.repeat(64)}.com`), /longer than 63/);
  });

  it('rejects leading or trailing hyphens in a label', () => {
    assertBadJid(() => parseJid('a@-example.com'), /hyphen/);
    assertBadJid(() => parseJid('a@example-.com'), /hyphen/);
    assertBadJid(() => parseJid('a@example.-com'), /hyphen/);
    assert.equal(parseJid('a@ex-am-ple.com').domain, 'ex-am-ple.com');
  });

  it('rejects characters other than letters, digits and hyphens', () => {
    for (const bad of ['exa_mple.com', 'exa!mple.com', 'example.com:5222', 'exa*mple.com', 'exam@ple.com', 'exa"mple.com']) {
      assertBadJid(() => parseJid(`a@${bad}`), /character/);
    }
  });

  it('accepts internationalised domains and digits', () => {
    assert.equal(parseJid('a@bücher.de').domain, 'bücher.de');
    assert.equal(parseJid('a@ΠΑΡΑΔΕΙΓΜΑ.δοκιμή').domain, 'παραδειγμα.δοκιμή');
    assert.equal(parseJid('a@xn--bcher-kva.de').domain, 'xn--bcher-kva.de');
    assert.equal(parseJid('a@123.example').domain, '123.example');
    assert.equal(parseJid('a@localhost').domain, 'localhost');
  });

  it('accepts IPv4 literals and rejects malformed ones', () => {
    assert.equal(parseJid('a@192.168.0.1').domain, '192.168.0.1');
    assert.equal(parseJid('a@0.0.0.0/r').full, 'a@0.0.0.0/r');
    assertBadJid(() => parseJid('a@256.1.1.1'), /IPv4/);
    assertBadJid(() => parseJid('a@1.2.3.04'), /IPv4/);
  });

  it('accepts bracketed IPv6 literals', () => {
    for (const ip of ['::1', '::', '2001:db8::1', 'fe80::1:2:3:4', '1:2:3:4:5:6:7:8', '::ffff:192.0.2.1', '1:2:3:4:5:6:1.2.3.4', '2001:DB8::A']) {
      const j = parseJid(`juliet@[${ip}]/r`);
      assert.equal(j.domain, `[${ip.toLowerCase()}]`);
      assert.equal(j.resource, 'r');
    }
    assert.equal(parseJid('[::1]').bare, '[::1]');
  });

  it('rejects malformed IPv6 literals', () => {
    for (const bad of ['[]', '[::1', '::1]', '[1:2:3:4:5:6:7:8:9]', '[1::2::3]', '[12345::1]', '[g::1]', '[1:2:3:4:5:6:7]', '[:::]', '[::1%eth0]', '[::300.1.1.1]', '[1:2:3:4:5:6:7:1.2.3.4]']) {
      assertBadJid(() => parseJid(`a@${bad}`));
    }
  });

  it('rejects bare IPv6 without brackets', () => {
    assertBadJid(() => parseJid('a@::1'));
  });
});

describe('parseJid: resourcepart', () => {
  it('allows spaces, punctuation and any letters', () => {
    assert.equal(parseJid('a@example.com/My Phone (work) #2').resource, 'My Phone (work) #2');
    assert.equal(parseJid('a@example.com/ресурс').resource, 'ресурс');
  });

  it('rejects control characters', () => {
    for (const ch of ['\u0000', '\n', '\r', '\t', '\u001F', '\u007F', '\u0085']) {
      assertBadJid(() => parseJid(`a@example.com/res${ch}x`), /resourcepart contains a control/);
    }
  });
});

describe('parseAccountJid', () => {
  it('returns the normalised bare JID', () => {
    assert.equal(parseAccountJid('Juliet@Example.COM'), 'juliet@example.com');
    assert.equal(parseAccountJid('ｊｕｌｉｅｔ@example.com.'), 'juliet@example.com');
  });

  it('requires a localpart', () => {
    assertBadJid(() => parseAccountJid('example.com'), /needs a localpart/);
  });

  it('refuses a resource', () => {
    assertBadJid(() => parseAccountJid('juliet@example.com/balcony'), /must not carry a resource/);
  });

  it('passes parse errors through', () => {
    assertBadJid(() => parseAccountJid('jul iet@example.com'), /whitespace/);
    assertBadJid(() => parseAccountJid(''), /empty/);
  });
});

describe('isValidAccountJid', () => {
  it('mirrors parseAccountJid', () => {
    assert.equal(isValidAccountJid('juliet@example.com'), true);
    assert.equal(isValidAccountJid('Juliet@Example.com'), true);
    assert.equal(isValidAccountJid('example.com'), false);
    assert.equal(isValidAccountJid('juliet@example.com/r'), false);
    assert.equal(isValidAccountJid('a&b@example.com'), false);
    assert.equal(isValidAccountJid(''), false);
    assert.equal(isValidAccountJid(undefined as unknown as string), false);
  });
});

describe('parseResource', () => {
  it('NFC-normalises and keeps case', () => {
    assert.equal(parseResource('Cafe\u0301'), 'Caf\u00e9');
    assert.equal(parseResource('Phone'), 'Phone');
    assert.equal(parseResource('a/b@c'), 'a/b@c');
  });

  it('enforces 1..1023 bytes', () => {
    assertBadJid(() => parseResource(''), /empty/);
    assert.equal(parseResource('x'.repeat(1023)).length, 1023);
    assertBadJid(() => parseResource('x'.repeat(1024)), /1024 bytes/);
    assert.ok(parseResource('é'.repeat(511) + 'x'));
    assertBadJid(() => parseResource('é'.repeat(512)), /1024 bytes/);
  });

  it('rejects control characters and non-strings', () => {
    assertBadJid(() => parseResource('a\u0000b'), /control/);
    assertBadJid(() => parseResource('a\nb'), /control/);
    assertBadJid(() => parseResource(7 as unknown as string));
  });
});

describe('helpers on normalised strings', () => {
  it('bareOf', () => {
    assert.equal(bareOf('a@example.com/r/s@t'), 'a@example.com');
    assert.equal(bareOf('a@example.com'), 'a@example.com');
    assert.equal(bareOf('example.com/r'), 'example.com');
  });

  it('domainOf', () => {
    assert.equal(domainOf('a@example.com'), 'example.com');
    assert.equal(domainOf('example.com'), 'example.com');
    assert.equal(domainOf('a@example.com/r@x'), 'example.com');
  });

  it('localOf', () => {
    assert.equal(localOf('a@example.com'), 'a');
    assert.equal(localOf('example.com'), '');
    assert.equal(localOf('example.com/r@x'), '');
  });
});

describe('errors', () => {
  it('are PresenceError with code bad-jid and a readable message', () => {
    try {
      parseJid('a<b@example.com');
      assert.fail('should have thrown');
    } catch (e) {
      assert.ok(e instanceof PresenceError);
      assert.equal(e.code, 'bad-jid');
      assert.equal(e.name, 'PresenceError');
      assert.match(e.message, /^invalid JID "a<b@example\.com": /);
    }
  });

  it('truncate very long inputs in the message', () => {
    try {
      parseJid(`${'a'.repeat(5000)}@example.com`);
      assert.fail('should have thrown');
    } catch (e) {
      assert.ok(e instanceof PresenceError);
      assert.ok(e.message.length < 300, e.message);
    }
  });
});
