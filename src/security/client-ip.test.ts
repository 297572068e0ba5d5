import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { TrustedProxies, isCidr, normalizeIp, parseCidr, rateLimitKey } from './client-ip.js';

describe('parseCidr / isCidr', () => {
  it('reads-addresses-and-ranges-of-both-families', () => {
    assert.deepEqual(parseCidr('10.0.0.0/8'), { address: '10.0.0.0', prefix: 8, family: 'ipv4' });
    assert.deepEqual(parseCidr('10.0.0.7'), { address: '10.0.0.7', prefix: 32, family: 'ipv4' });
    assert.deepEqual(parseCidr('fd00::/8'), { address: 'fd00::', prefix: 8, family: 'ipv6' });
    assert.deepEqual(parseCidr('::1'), { address: '::1', prefix: 128, family: 'ipv6' });
    assert.deepEqual(parseCidr('0.0.0.0/0'), { address: '0.0.0.0', prefix: 0, family: 'ipv4' });
    assert.deepEqual(parseCidr('::ffff:10.0.0.0/104'), { address: '::ffff:10.0.0.0', prefix: 104, family: 'ipv6' });
  });

  it('refuses-anything-else-naming-the-entry', () => {
    for (const bad of ['', 'localhost', '10.0.0.0/33', 'fd00::/129', '10.0.0.0/', '10.0.0.0/08', '10.0.0.0/+8', '10.0.0.0/8/8', '10.0.0', '010.0.0.1', ' 10.0.0.1', 'fe80::1%eth0', '10.0.0.0/8 ']) {
      assert.equal(isCidr(bad), false, bad);
      assert.throws(() => parseCidr(bad), (err: unknown) => err instanceof TypeError && err.message.includes(`"${bad}"`), bad);
    }
    assert.equal(isCidr('192.168.0.0/16'), true);
  });

  it('throws-from-the-constructor-on-the-first-bad-entry', () => {
    assert.throws(() => new TrustedProxies(['10.0.0.0/8', 'proxy.internal']), { name: 'TypeError', message: /"proxy\.internal"/ });
  });
});

describe('normalizeIp', () => {
  it('turns-ipv4-mapped-ipv6-into-ipv4-and-leaves-the-rest', () => {
    assert.equal(normalizeIp('::ffff:1.2.3.4'), '1.2.3.4');
    assert.equal(normalizeIp('::FFFF:1.2.3.4'), '1.2.3.4');
    assert.equal(normalizeIp('1.2.3.4'), '1.2.3.4');
    assert.equal(normalizeIp('2001:db8::1'), '2001:db8::1');
    assert.equal(normalizeIp('::1'), '::1');
    assert.equal(normalizeIp('::ffff:1.2.3'), '::ffff:1.2.3');
  });
});

describe('TrustedProxies', () => {
  const proxies = new TrustedProxies(['10.0.0.0/8', '192.168.1.1', 'fd00::/8']);

  it('ignores-x-forwarded-for-from-an-untrusted-peer', () => {
    assert.equal(proxies.clientIp('203.0.113.9', '1.1.1.1'), '203.0.113.9');
    assert.equal(proxies.clientIp('203.0.113.9', ['1.1.1.1', '10.0.0.1']), '203.0.113.9');
    assert.equal(proxies.forwardedFor('203.0.113.9', '1.1.1.1'), '203.0.113.9', 'the claim is not passed on either');
  });

  it('reads-nothing-when-no-proxy-is-trusted', () => {
    const none = new TrustedProxies([]);
    assert.equal(none.empty, true);
    assert.equal(none.clientIp('10.0.0.1', '1.1.1.1'), '10.0.0.1');
    assert.equal(none.clientIp('::ffff:10.0.0.1', '1.1.1.1'), '10.0.0.1');
    assert.equal(none.forwardedFor('10.0.0.1', '1.1.1.1'), '10.0.0.1');
    assert.equal(none.trusts('10.0.0.1'), false);
    assert.equal(proxies.empty, false);
  });

  it('takes-the-entry-a-trusted-peer-added', () => {
    assert.equal(proxies.clientIp('10.0.0.1', '203.0.113.9'), '203.0.113.9');
    assert.equal(proxies.clientIp('10.0.0.1', undefined), '10.0.0.1');
    assert.equal(proxies.clientIp('10.0.0.1', ''), '10.0.0.1');
    assert.equal(proxies.forwardedFor('10.0.0.1', '203.0.113.9'), '203.0.113.9, 10.0.0.1');
    assert.equal(proxies.forwardedFor('10.0.0.1', undefined), '10.0.0.1');
    assert.equal(proxies.forwardedFor('10.0.0.1', ' '), '10.0.0.1');
  });

  it('walks-a-chain-of-trusted-proxies-to-the-first-untrusted-address', () => {
    // The client spoofed 6.6.6.6; proxies 192.168.1.1 and 10.1.1.1 are ours.
    assert.equal(proxies.clientIp('10.0.0.1', '6.6.6.6, 203.0.113.9, 192.168.1.1, 10.1.1.1'), '203.0.113.9');
    assert.equal(proxies.clientIp('10.0.0.1', ['6.6.6.6, 203.0.113.9', '192.168.1.1,10.1.1.1']), '203.0.113.9', 'several header lines are one list');
    assert.equal(proxies.forwardedFor('10.0.0.1', ['6.6.6.6', '203.0.113.9']), '6.6.6.6, 203.0.113.9, 10.0.0.1');
  });

  it('takes-the-leftmost-when-every-hop-is-trusted', () => {
    assert.equal(proxies.clientIp('10.0.0.1', '10.9.9.9, 192.168.1.1'), '10.9.9.9');
  });

  it('matches-ipv6-ranges-and-ipv4-mapped-addresses-against-ipv4-ranges', () => {
    assert.equal(proxies.clientIp('fd00::5', '2001:db8::7'), '2001:db8::7');
    assert.equal(proxies.clientIp('fd00::5', 'fd12::1, [2001:db8::7]:443, fd00::9'), '2001:db8::7');
    assert.equal(proxies.clientIp('::ffff:10.0.0.1', '::ffff:203.0.113.9'), '203.0.113.9', 'a mapped peer is trusted by 10.0.0.0/8, a mapped client is normalised');
    assert.equal(proxies.clientIp('::ffff:203.0.113.9', '1.1.1.1'), '203.0.113.9');
    assert.equal(proxies.clientIp('2001:db8::1', '1.1.1.1'), '2001:db8::1');
    assert.equal(proxies.trusts('::ffff:192.168.1.1'), true);
    assert.equal(new TrustedProxies(['::ffff:10.0.0.0/104']).clientIp('10.2.3.4', '1.1.1.1'), '1.1.1.1', 'a mapped range trusts the IPv4 addresses it maps');
  });

  it('drops-ports-and-skips-empty-entries', () => {
    assert.equal(proxies.clientIp('10.0.0.1', '203.0.113.9:51234'), '203.0.113.9');
    assert.equal(proxies.clientIp('10.0.0.1', '203.0.113.9 ,, 10.0.0.2 ,'), '203.0.113.9');
    assert.equal(proxies.clientIp('10.0.0.1', '[2001:db8::7]'), '2001:db8::7');
  });

  it('stops-at-garbage-and-answers-the-trusted-hop-that-passed-it-on', () => {
    assert.equal(proxies.clientIp('10.0.0.1', 'unknown'), '10.0.0.1');
    assert.equal(proxies.clientIp('10.0.0.1', '203.0.113.9, <script>, 10.0.0.2'), '10.0.0.2', 'not 203.0.113.9: left of garbage nothing is vouched for');
    assert.equal(proxies.clientIp('10.0.0.1', 'garbage, 203.0.113.9'), '203.0.113.9', 'garbage left of the client is never read');
    for (const bad of ['1.2.3.4:', '1.2.3.4:123456', '[2001:db8::1', '[1.2.3.4]', '2001:db8::1:80x', 'fe80::1%eth0', '1.2.3.4.5', '_hidden', '"1.2.3.4"']) {
      assert.equal(proxies.clientIp('10.0.0.1', `${bad}, 10.0.0.2`), '10.0.0.2', bad);
    }
  });

  it('answers-the-peer-or-an-address-the-list-holds-never-anything-else (property)', () => {
    const octet = fc.integer({ min: 0, max: 255 });
    const v4 = fc.tuple(octet, octet, octet, octet).map((o) => o.join('.'));
    const trusted = fc.tuple(octet, octet, octet).map((o) => `10.${o.join('.')}`);
    const junk = fc.string({ maxLength: 12 }).filter((j) => !j.includes(','));
    const entry = fc.oneof(v4, trusted, junk);
    fc.assert(
      fc.property(fc.oneof(v4, trusted), fc.array(entry, { maxLength: 8 }), (peer, entries) => {
        const header = entries.join(', ');
        const client = proxies.clientIp(peer, header);
        if (!peer.startsWith('10.')) {
          assert.equal(client, peer);
          return;
        }
        const listed = entries.map((e) => e.trim()).filter((e) => e !== '');
        const at = listed.lastIndexOf(client);
        if (at === -1) {
          assert.equal(client, peer, `${client} from ${peer} / ${header}`);
          return;
        }
        // Every hop right of the client is trusted: nobody else could have written it.
        for (const right of listed.slice(at + 1)) assert.ok(right.startsWith('10.'), `${right} right of ${client} in ${header}`);
      }),
    );
  });

  it('keys-ipv6-clients-by-their-64-and-ipv4-clients-by-their-address', () => {
    assert.equal(rateLimitKey('203.0.113.9'), '203.0.113.9');
    assert.equal(rateLimitKey('2001:db8:1:2:aaaa:bbbb:cccc:dddd'), '2001:db8:1:2::/64');
    assert.equal(rateLimitKey('2001:db8:1:2::1'), '2001:db8:1:2::/64');
    assert.equal(rateLimitKey('2001:DB8:0001:0002:ffff::9'), '2001:db8:1:2::/64');
    assert.equal(rateLimitKey('2001:db8::'), '2001:db8:0:0::/64');
    assert.equal(rateLimitKey('::1'), '0:0:0:0::/64');
  });
});
