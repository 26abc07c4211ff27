<?php
/**
 * Development self-test of LicenseClient.php against tests/fake_server.php.
 *
 *   php -d error_reporting=E_ALL -d display_errors=1 tests/selftest.php
 *
 * Starts the fake server on a free local port, drives every branch of the client with a
 * fake clock, prints one line per assertion and exits non-zero on any failure (including
 * any PHP warning or notice, which are turned into failures).
 * `php -n tests/selftest.php` runs it without ext-curl (transport "auto" → stream fallback).
 */

require __DIR__ . '/../LicenseClient.php';

set_error_handler(function ($severity, $message, $file, $line) {
    if (!(error_reporting() & $severity)) {
        return false; // silenced with @ on purpose
    }
    throw new ErrorException($message, 0, $severity, $file, $line);
});

$failures = 0;
$passes = 0;

function ok(string $name, bool $condition, string $detail = ''): void
{
    global $failures, $passes;
    if ($condition) {
        $passes++;
        echo "  ok   $name\n";
    } else {
        $failures++;
        echo "  FAIL $name" . ($detail !== '' ? "  -- $detail" : '') . "\n";
    }
}

function section(string $title): void
{
    echo "\n== $title\n";
}

function b64url(string $b): string
{
    return rtrim(strtr(base64_encode($b), '+/', '-_'), '=');
}

// ---------------------------------------------------------------- fixture

$dir = sys_get_temp_dir() . '/lsc-selftest-' . bin2hex(random_bytes(4));
mkdir($dir, 0700);
$stateFile = $dir . '/state.json';
$logFile = $dir . '/requests.log';
touch($logFile);

$keypair = sodium_crypto_sign_keypair();
$kid = 'test-2026';
$keys = array($kid => b64url(sodium_crypto_sign_publickey($keypair)));
$clock = 1800000000;
$state = array();

function setState(array $overrides): void
{
    global $state, $stateFile, $clock, $keypair, $kid, $logFile;
    $state = array_merge(array(
        'sk' => base64_encode(sodium_crypto_sign_secretkey($keypair)), 'kid' => $kid, 'mode' => 'decide',
        'status' => 'active', 'reason' => 'ok', 'ttl' => 3 * 86400, 'grace' => 7 * 86400, 'retry_after' => 120,
        'log' => $logFile,
    ), $overrides);
    $state['server_time'] = $clock;
    file_put_contents($stateFile, json_encode($state));
}

/** Keep the fake server's server_time equal to the client's fake clock. */
function syncClock(): void
{
    global $state, $stateFile, $clock;
    if ($state['server_time'] !== $clock) {
        $state['server_time'] = $clock;
        file_put_contents($stateFile, json_encode($state));
    }
}

function freePort(): int
{
    $socket = stream_socket_server('tcp://127.0.0.1:0');
    $name = stream_socket_get_name($socket, false);
    fclose($socket);
    return (int) substr($name, strrpos($name, ':') + 1);
}

setState(array());
$port = freePort();
$server = proc_open(
    array(PHP_BINARY, '-S', '127.0.0.1:' . $port, __DIR__ . '/fake_server.php'),
    array(0 => array('file', '/dev/null', 'r'), 1 => array('file', $dir . '/server.out', 'w'), 2 => array('file', $dir . '/server.err', 'w')),
    $pipes, __DIR__, array_merge(getenv(), array('FAKE_STATE' => $stateFile))
);
register_shutdown_function(function () use ($server) {
    proc_terminate($server);
    proc_close($server);
});
$url = 'http://127.0.0.1:' . $port;
for ($i = 0; $i < 50; $i++) {
    $probe = @fsockopen('127.0.0.1', $port, $errno, $errstr, 0.1);
    if ($probe) {
        fclose($probe);
        break;
    }
    usleep(100000);
}
$deadPort = freePort(); // nothing listens here

$cacheFile = $dir . '/cache.json';

function client(array $extra = array()): LicenseServer_Client
{
    global $url, $keys, $cacheFile;
    return new LicenseServer_Client(array_merge(array(
        'server_url' => $url,
        'public_keys' => $keys,
        'license_key' => ' KEY-1234 ',
        'domain' => 'www.Example.com',
        'cache_file' => $cacheFile,
        'server' => array(),
        'now' => function () {
            global $clock;
            syncClock();
            return $clock;
        },
    ), $extra));
}

function fresh(): void
{
    global $cacheFile;
    @unlink($cacheFile);
}

/** Requests the fake server has seen since the previous call. */
function requests(): array
{
    global $logFile;
    static $seen = 0;
    $lines = array_values(array_filter(explode("\n", (string) file_get_contents($logFile))));
    $new = array_slice($lines, $seen);
    $seen = count($lines);
    return array_map(function ($l) {
        return json_decode($l, true);
    }, $new);
}

function expect(string $name, LicenseServer_Result $r, string $status, ?string $reason, bool $fromCache, int $requests,
    bool $unverified = false): void
{
    $got = count(requests());
    ok($name, $r->status === $status && ($reason === null || $r->reason === $reason) && $r->fromCache === $fromCache
        && $got === $requests && $r->isUnverified() === $unverified && $r->toArray()['unverified'] === $unverified,
        sprintf('got %s/%s from_cache=%s requests=%d unverified=%s (%s)', $r->status, $r->reason,
            var_export($r->fromCache, true), $got, var_export($r->isUnverified(), true), $r->message));
}

function cacheData(): array
{
    global $cacheFile;
    return json_decode((string) file_get_contents($cacheFile), true);
}

// ---------------------------------------------------------------- domain normalisation

section('domain normalisation');
$vectors = array(
    'WWW.Example.COM.' => 'example.com',
    'https://www.example.com:8443/whmcs/?x=1' => 'example.com',
    'shop.example.com:80' => 'shop.example.com',
    '[2001:db8::1]:8080' => '2001:db8::1',
    'bücher.de' => 'xn--bcher-kva.de',
    'www.münchen.de' => 'xn--mnchen-3ya.de',
    'www.www.example.com' => 'example.com', // the server strips "www." while 3+ labels remain
    'www.com' => 'www.com',
    'straße.de' => 'xn--strae-oqa.de', // non-transitional, as the server (not "strasse.de")
    '[::FFFF:127.0.0.1]' => '127.0.0.1',
    '[2001:DB8:0:0:1:0:0:1]:443' => '2001:db8::1:0:0:1',
    '' => '',
);
foreach ($vectors as $in => $want) {
    $got = LicenseServer_Client::normaliseDomain($in);
    ok("normalise '$in'", $got === $want, "got '$got'");
}

// ---------------------------------------------------------------- active + cache

section('active, fresh cache, check_interval');
fresh();
requests();
setState(array('reason' => 'activated'));
$r = client()->check();
expect('first check phones home and is active', $r, 'active', 'activated', false, 0 + 1);
ok('license facts exposed', is_array($r->license) && $r->license['product'] === 'WIDGET' && $r->hasFeature('pro') && !$r->hasFeature('x'));
ok('isActive()', $r->isActive());
$all = array_map(function ($l) {
    return json_decode($l, true);
}, array_values(array_filter(explode("\n", (string) file_get_contents($logFile)))));
$last = end($all);
ok('request is a form POST to /api/v1/verify', $last['method'] === 'POST' && $last['path'] === '/api/v1/verify'
    && strpos($last['content_type'], 'application/x-www-form-urlencoded') === 0);
ok('fields: trimmed key, normalised domain, version, no product',
    $last['post']['license_key'] === 'KEY-1234' && $last['post']['domain'] === 'example.com'
    && $last['post']['client_version'] === 'php-1.0.0' && !isset($last['post']['product'])
    && $last['post']['ip'] === '' && $last['post']['directory'] === '');
ok('nonce is 32 url-safe chars', (bool) preg_match('/^[A-Za-z0-9_-]{32}$/', $last['post']['nonce']));
ok('cache file is 0600 JSON with local key', (fileperms($cacheFile) & 0777) === 0600 && is_string(cacheData()['local_key']));
ok('no temp files left behind', count(glob($dir . '/cache.json.*')) === 0);
ok('cache never uses serialize', strpos((string) file_get_contents($cacheFile), 'a:') !== 0);

$clock += 100;
$r = client()->check();
expect('fresh-cache hit: active without a request', $r, 'active', null, true, 0);
ok('fresh-cache hit keeps license facts', is_array($r->license) && $r->license['licensee'] === 'Jane');

$clock += 86400;
setState(array('reason' => 'ok'));
$r = client()->check();
expect('older than check_interval: phones home again', $r, 'active', 'ok', false, 1);

$r = client(array('product' => 'WIDGET', 'issuer' => 'fake'))->check();
expect('product/issuer match: cache hit', $r, 'active', null, true, 0);
$r = client(array('product' => ' widget '))->check();
expect('product codes compare case-insensitively: cache hit', $r, 'active', null, true, 0);
$r = client(array('product' => 'OTHER'))->check();
expect('product mismatch: cached key not used, phones home, key refused locally', $r, 'invalid', 'bad_local_key', false, 1);
fresh();
setState(array());
client()->check();
requests();

section('force, license key change, cache callbacks, edited cache');
$r = client()->check(true);
expect('check(true) bypasses the fresh cache', $r, 'active', null, false, 1);
$r = client(array('license_key' => 'KEY-OTHER'))->check();
expect('another license key: cache not reused', $r, 'active', null, false, 1);
$memory = null;
$mem = array(
    'cache_file' => null,
    'cache_load' => function () use (&$memory) {
        return $memory;
    },
    'cache_save' => function ($json) use (&$memory) {
        $memory = $json;
    },
);
$r = client($mem)->check();
expect('callback cache: first check phones home', $r, 'active', null, false, 1);
$r = client($mem)->check();
expect('callback cache: second check served from it', $r, 'active', null, true, 0);
ok('callback cache holds JSON', is_array(json_decode((string) $memory, true)));

fresh();
client()->check();
requests();
$c = cacheData();
$parts = explode('.', $c['local_key']);
$claims = json_decode(base64_decode(strtr($parts[1], '-_', '+/')), true);
$claims['exp'] += 999999;
$c['local_key'] = $parts[0] . '.' . b64url(json_encode($claims)) . '.' . $parts[2];
file_put_contents($cacheFile, json_encode($c));
$r = client()->check();
expect('local key edited in the cache: ignored, phones home', $r, 'active', null, false, 1);
file_put_contents($cacheFile, 'a:1:{s:1:"x";O:8:"stdClass":0:{}}');
$r = client()->check();
expect('garbage / serialized cache: treated as empty', $r, 'active', null, false, 1);

// ---------------------------------------------------------------- domains in CLI

section('cron/CLI domain resolution');
fresh();
client()->check();
requests();
$cli = array('domain' => null);
$r = client($cli)->check();
expect('CLI without SERVER_NAME: cached key domain, cache hit', $r, 'active', null, true, 0);
$r = client($cli)->check(true);
expect('CLI forced re-check', $r, 'active', null, false, 1);
$all = array_values(array_filter(explode("\n", (string) file_get_contents($logFile))));
ok('CLI re-check sends the cached domain', json_decode(end($all), true)['post']['domain'] === 'example.com');
fresh();
$r = client($cli)->check();
expect('no domain anywhere: invalid/no_domain without a request', $r, 'invalid', 'no_domain', false, 0);
$r = client(array('domain' => null, 'server' => array('SERVER_NAME' => 'WWW.Shop.Example:8443', 'SERVER_ADDR' => '10.0.0.5')))->check();
expect('web request: SERVER_NAME used', $r, 'active', null, false, 1);
$all = array_values(array_filter(explode("\n", (string) file_get_contents($logFile))));
$post = json_decode(end($all), true)['post'];
ok('SERVER_NAME normalised, SERVER_ADDR sent as ip', $post['domain'] === 'shop.example' && $post['ip'] === '10.0.0.5');
$r = client(array('domain' => null, 'server' => array('HTTP_HOST' => 'shop.example')))->check();
expect('HTTP_HOST fallback, same domain: cache hit', $r, 'active', null, true, 0);
$r = client(array('license_key' => '   '))->check();
expect('empty license key: invalid/no_license_key without a request', $r, 'invalid', 'no_license_key', false, 0);

// ---------------------------------------------------------------- refusals

section('refusals and their back-off');
foreach (array(
    array('invalid', 'unknown_key'), array('invalid', 'domain_not_allowed'), array('expired', 'expired'),
    array('suspended', 'suspended'), array('revoked', 'revoked'),
) as $case) {
    list($status, $reason) = $case;
    fresh();
    setState(array('status' => $status, 'reason' => $reason));
    $r = client()->check();
    expect("$status/$reason: returned", $r, $status, $reason, false, 1);
    ok("$status/$reason: not active", !$r->isActive());
    $clock += 3599;
    $r = client()->check();
    expect("$status/$reason: cached during refused_retry", $r, $status, $reason, true, 0);
    $clock += 1;
    $r = client()->check();
    expect("$status/$reason: asks again after refused_retry", $r, $status, $reason, false, 1);
}
$r = client(array('license_key' => 'KEY-FIXED'))->check();
expect('customer fixes the key: asks at once despite back-off', $r, 'revoked', null, false, 1);

fresh();
setState(array());
client()->check();
$clock += 86400;
setState(array('status' => 'revoked', 'reason' => 'revoked'));
$r = client()->check();
expect('active key then revoked', $r, 'revoked', 'revoked', false, 2);
ok('revocation drops the local key', cacheData()['local_key'] === null);
$clock += 3600;
setState(array('mode' => 'down'));
$r = client()->check();
expect('outage after revocation does not resurrect the key', $r, 'unreachable', 'server_error', false, 1);
ok('message mentions last answer', strpos($r->message, 'revoked') !== false, $r->message);

$c = cacheData();
fresh();
setState(array('status' => 'revoked', 'reason' => 'revoked'));
client()->check();
requests();
$c = cacheData();
$c['decision']['body'] = str_replace('"revoked"', '"active"', $c['decision']['body']);
file_put_contents($cacheFile, json_encode($c));
$r = client()->check();
expect('edited cached refusal: not believed, phones home', $r, 'revoked', null, false, 1);

// ---------------------------------------------------------------- unverifiable answers

section('unverifiable answers: no answer at all, handled like an outage');
// An answer that fails its signature, key id, nonce or freshness check must never switch a
// paying site off: cached local key, then grace, then unreachable, flagged unverified.
foreach (array(
    array('tamper', 'tampered'), array('no_header', 'tampered'), array('wrong_nonce', 'bad_nonce'),
    array('unknown_kid', 'unknown_key_id'), array('stale', 'stale_response'),
) as $case) {
    list($mode, $reason) = $case;
    // Nothing cached: unreachable.
    fresh();
    setState(array('mode' => $mode, 'status' => 'invalid', 'reason' => 'unknown_key'));
    $r = client()->check();
    expect("$mode, nothing cached: unreachable/$reason, unverified", $r, 'unreachable', $reason, false, 1, true);
    ok("$mode: nothing valid cached", cacheData()['local_key'] === null && cacheData()['decision'] === null);
    $clock += 299;
    $r = client()->check();
    expect("$mode: backs off like an outage", $r, 'unreachable', $reason, true, 0, true);
    $clock += 1;
    setState(array());
    $r = client()->check();
    expect("$mode: retries after outage_retry, real answer accepted", $r, 'active', null, false, 1);

    // A valid local key cached (fetched a day ago, so the client asks): active from the cache.
    $clock += 86400;
    setState(array('mode' => $mode, 'status' => 'revoked', 'reason' => 'revoked'));
    $r = client()->check();
    expect("$mode, valid key cached: active/$reason from cache, unverified", $r, 'active', $reason, true, 1, true);
    ok("$mode: cached local key kept", is_string(cacheData()['local_key']));
    $r = client()->check();
    expect("$mode, valid key cached: back-off replays without a request", $r, 'active', $reason, true, 0, true);

    // The cached key expired (ttl 3 days) but inside grace (7 more days): grace.
    $clock += 3 * 86400;
    $r = client()->check();
    expect("$mode, expired key cached: grace/$reason, unverified", $r, 'grace', $reason, true, 1, true);

    // Past grace: unreachable.
    $clock += 7 * 86400;
    $r = client()->check();
    expect("$mode, key past grace: unreachable/$reason, unverified", $r, 'unreachable', $reason, false, 1, true);
    $clock += 86400;
}

section('a signed answer with an unusable local key is the server\'s refusal');
fresh();
setState(array('mode' => 'bad_local_key'));
$r = client()->check();
expect('bad_local_key: invalid/bad_local_key', $r, 'invalid', 'bad_local_key', false, 1);
ok('bad_local_key: nothing valid cached', cacheData()['local_key'] === null);
$clock += 299;
$r = client()->check();
expect('bad_local_key: backs off', $r, 'invalid', 'bad_local_key', true, 0);
$clock += 1;
setState(array());
$r = client()->check();
expect('bad_local_key: retries after outage_retry, real answer accepted', $r, 'active', null, false, 1);
$clock += 300;

// ---------------------------------------------------------------- outages

section('outages, grace, back-off');
fresh();
setState(array());
$start = $clock;
client()->check();
requests();
$clock = $start + 2 * 86400;
setState(array('mode' => 'down'));
$r = client()->check();
expect('server down, key unexpired: active from cache', $r, 'active', 'server_error', true, 1);
$clock += 299;
$r = client()->check();
expect('during outage back-off: no request', $r, 'active', 'server_error', true, 0);
$clock = $start + 4 * 86400;
$r = client()->check();
expect('past exp, within grace: grace', $r, 'grace', 'server_error', true, 1);
ok('grace isActive()', $r->isActive());
$clock += 599;
$r = client()->check();
expect('second failure doubles the back-off (600 s)', $r, 'grace', null, true, 0);
$clock += 1;
$r = client()->check();
expect('after 600 s asks again', $r, 'grace', null, true, 1);
$clock += 1199;
client()->check();
ok('third failure: 1200 s back-off', count(requests()) === 0);
$clock = $start + 10 * 86400 + 1;
$r = client()->check();
expect('past grace_until: unreachable', $r, 'unreachable', 'server_error', false, 1);
ok('unreachable is not active', !$r->isActive());
$clock += 10;
$r = client()->check();
expect('unreachable replayed during back-off', $r, 'unreachable', 'server_error', true, 0);
for ($i = 0; $i < 10; $i++) {
    $clock += 30000;
    client()->check();
}
requests();
$b = cacheData()['backoff'];
ok('back-off capped at 6 h', $b['until'] - $clock === 21600, (string) ($b['until'] - $clock));
setState(array());
$clock = $b['until'];
$r = client()->check();
expect('recovery: active again, back-off cleared', $r, 'active', null, false, 1);
ok('failure counter reset', cacheData()['failures'] === 0 && cacheData()['backoff'] === null);

fresh();
$r = client(array('server_url' => 'http://127.0.0.1:' . $deadPort))->check();
ok('connection refused, nothing cached: unreachable/connect_failed', $r->status === 'unreachable' && $r->reason === 'connect_failed'
    && !$r->fromCache, $r->reason);
$t = microtime(true);
$r = client(array('server_url' => 'http://127.0.0.1:' . $deadPort))->check();
ok('connection refused again within back-off: cached, instant', $r->status === 'unreachable' && $r->fromCache
    && microtime(true) - $t < 0.05);

fresh();
setState(array('mode' => 'sleep'));
$t = microtime(true);
$r = client(array('timeout' => 1))->check();
$elapsed = microtime(true) - $t;
ok('timeout honoured (1 s)', $r->status === 'unreachable' && $r->reason === 'timeout' && $elapsed < 2.0,
    sprintf('%s %.2fs', $r->reason, $elapsed));
usleep(2200000); // let the single-threaded fake server finish sleeping
requests();

fresh();
setState(array('mode' => 'rate_limited', 'retry_after' => 120));
$r = client()->check();
expect('429: unreachable/rate_limited', $r, 'unreachable', 'rate_limited', false, 1);
$clock += 119;
$r = client()->check();
expect('429: Retry-After respected', $r, 'unreachable', 'rate_limited', true, 0);
$clock += 1;
setState(array());
$r = client()->check();
expect('429: asks again after Retry-After', $r, 'active', null, false, 1);
$clock += 86400;
setState(array('mode' => 'rate_limited', 'retry_after' => 999999));
$r = client()->check();
expect('429 with a cached key: active from cache', $r, 'active', 'rate_limited', true, 1);
ok('hostile Retry-After capped at 6 h', cacheData()['backoff']['until'] - $clock === 21600);

fresh();
setState(array('mode' => 'bad_request'));
$r = client()->check();
expect('400 problem: undecided, unreachable/request_rejected', $r, 'unreachable', 'request_rejected', false, 1);
ok('signed problem detail in message', strpos($r->message, 'slow down') !== false, $r->message);
fresh();
setState(array('mode' => 'garbage'));
$r = client()->check();
expect('signed non-JSON: unreachable/bad_response', $r, 'unreachable', 'bad_response', false, 1);

// ---------------------------------------------------------------- stream fallback

section('file_get_contents-style stream transport');
$stream = array('transport' => 'stream');
fresh();
setState(array());
$r = client($stream)->check();
expect('stream: active', $r, 'active', null, false, 1);
$clock += 86400;
setState(array('status' => 'suspended', 'reason' => 'suspended'));
$r = client($stream)->check();
expect('stream: refusal', $r, 'suspended', 'suspended', false, 1);
fresh();
setState(array('mode' => 'rate_limited', 'retry_after' => 50));
$r = client($stream)->check();
expect('stream: 429', $r, 'unreachable', 'rate_limited', false, 1);
ok('stream: Retry-After header read', cacheData()['backoff']['until'] - $clock === 50);
fresh();
setState(array('mode' => 'tamper'));
$r = client($stream)->check();
expect('stream: tampered', $r, 'unreachable', 'tampered', false, 1, true);
fresh();
$r = client($stream + array('server_url' => 'http://127.0.0.1:' . $deadPort))->check();
ok('stream: connection refused', $r->status === 'unreachable' && $r->reason === 'connect_failed', $r->reason);
fresh();
setState(array('mode' => 'sleep'));
$t = microtime(true);
$r = client($stream + array('timeout' => 1))->check();
ok('stream: timeout', $r->status === 'unreachable' && $r->reason === 'timeout' && microtime(true) - $t < 2.0, $r->reason);
usleep(2200000);
requests();

// ---------------------------------------------------------------- signature header parsing

section('License-Signature header parsing');
$sig64 = base64_encode(str_repeat('x', 64));
$good = 'keyid="k1", algorithm="ed25519", signature="' . $sig64 . '"';
ok('well-formed accepted', LicenseServer_Client::parseSignatureHeader($good) !== null);
ok('any order accepted', LicenseServer_Client::parseSignatureHeader('signature="' . $sig64 . '",keyid="k1",algorithm="ed25519"') !== null);
foreach (array(
    'missing algorithm' => 'keyid="k1", signature="' . $sig64 . '"',
    'wrong algorithm' => 'keyid="k1", algorithm="rsa", signature="' . $sig64 . '"',
    'duplicate keyid' => $good . ', keyid="k2"',
    'unquoted' => 'keyid=k1, algorithm="ed25519", signature="' . $sig64 . '"',
    'url-safe signature' => 'keyid="k1", algorithm="ed25519", signature="' . strtr($sig64, '+/', '-_') . '_"',
    'unpadded signature' => 'keyid="k1", algorithm="ed25519", signature="' . rtrim($sig64, '=') . '"',
    'short signature' => 'keyid="k1", algorithm="ed25519", signature="' . base64_encode('short') . '"',
    'trailing junk' => $good . ' junk',
) as $name => $header) {
    ok("rejected: $name", LicenseServer_Client::parseSignatureHeader($header) === null);
}

// ---------------------------------------------------------------- compat endpoint

section('WHMCS-compatible endpoint signature');
$token = bin2hex(random_bytes(16));
$raw = (string) file_get_contents($url . '/modules/servers/licensing/verify.php', false, stream_context_create(array('http' => array(
    'method' => 'POST', 'header' => 'Content-Type: application/x-www-form-urlencoded',
    'content' => http_build_query(array('licensekey' => 'KEY-1234', 'domain' => 'example.com', 'check_token' => $token))))));
requests();
ok('compat: valid signature', LicenseServer_CompatSignature::verify($raw, $token, $keys));
ok('compat: fields parsed', LicenseServer_CompatSignature::fields($raw)['status'] === 'Active');
ok('compat: tampered value', !LicenseServer_CompatSignature::verify(str_replace('Test Co', 'Evil Co', $raw), $token, $keys));
ok('compat: replay with another token', !LicenseServer_CompatSignature::verify($raw, $token . 'x', $keys));
ok('compat: empty token', !LicenseServer_CompatSignature::verify($raw, '', $keys));
ok('compat: unknown kid', !LicenseServer_CompatSignature::verify($raw, $token, array('other' => $keys[$kid])));
ok('compat: wrong key', !LicenseServer_CompatSignature::verify($raw, $token,
    array($kid => b64url(sodium_crypto_sign_publickey(sodium_crypto_sign_keypair())))));
ok('compat: signature line missing', !LicenseServer_CompatSignature::verify(substr($raw, 0, strrpos($raw, "\n") + 1), $token, $keys));
ok('compat: line appended after signature', !LicenseServer_CompatSignature::verify($raw . "\n<status>Active</status>", $token, $keys));
ok('compat: line removed', !LicenseServer_CompatSignature::verify(preg_replace('#<validdomain>.*\n#', '', $raw), $token, $keys));
ok('compat: malformed signature', !LicenseServer_CompatSignature::verify(preg_replace('#\.[A-Za-z0-9_-]+</lic#', '.abc</lic', $raw), $token, $keys));

// ---------------------------------------------------------------- run_checks.php

section('run_checks.php');
fresh();
setState(array());
$config = array('server_url' => $url, 'public_keys' => array('keys' => array(array('kty' => 'OKP', 'crv' => 'Ed25519',
    'x' => $keys[$kid], 'kid' => $kid, 'use' => 'sig', 'alg' => 'EdDSA'))), 'license_key' => 'KEY-1234',
    'domain' => 'example.com', 'cache_path' => $cacheFile, 'now' => $clock, 'timeout' => 2);
$cmd = escapeshellarg(PHP_BINARY) . ' -d error_reporting=E_ALL -d display_errors=1 ' . escapeshellarg(__DIR__ . '/run_checks.php') . ' ';
$out = shell_exec($cmd . escapeshellarg(json_encode($config)));
$line = json_decode((string) $out, true);
ok('inline config: one JSON line with exactly the five keys', substr_count((string) $out, "\n") === 1 && is_array($line)
    && array_keys($line) === array('status', 'reason', 'from_cache', 'message', 'unverified') && $line['status'] === 'active'
    && $line['from_cache'] === false, (string) $out);
file_put_contents($dir . '/config.json', json_encode(array_merge($config, array('domain' => null, 'now' => $clock + 10))));
$out = shell_exec($cmd . escapeshellarg($dir . '/config.json'));
$line = json_decode((string) $out, true);
ok('config file, no domain (cron): cached domain, from cache', is_array($line) && $line['status'] === 'active'
    && $line['from_cache'] === true, (string) $out);
$out = shell_exec($cmd . escapeshellarg('{"server_url":"ftp://x"}') . '; echo "rc=$?"');
ok('bad config: status error, exit 2', strpos((string) $out, '"status":"error"') !== false && strpos((string) $out, 'rc=2') !== false, (string) $out);
requests();

// ---------------------------------------------------------------- done

echo "\n$passes passed, $failures failed\n";
array_map('unlink', glob($dir . '/*'));
rmdir($dir);
exit($failures === 0 ? 0 : 1);
