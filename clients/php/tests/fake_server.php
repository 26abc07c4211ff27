<?php
/**
 * Development-only fake license server for selftest.php:
 *   FAKE_STATE=/path/state.json php -S 127.0.0.1:PORT fake_server.php
 *
 * Behaviour is driven by the JSON state file (rewritten by selftest.php between checks):
 *   sk, kid            base64 secret key and key id used to sign
 *   mode               decide | tamper | wrong_nonce | unknown_kid | no_header | stale |
 *                      down | rate_limited | garbage | sleep | bad_local_key | bad_request
 *   status, reason     the decision for mode=decide
 *   server_time        unix time to report (selftest keeps it equal to its fake clock)
 *   ttl, grace         local key lifetime and grace after exp
 *   retry_after        Retry-After for mode=rate_limited
 *   log                file to append one JSON line per request to
 * It also serves /modules/servers/licensing/verify.php in the compat format.
 */

require __DIR__ . '/../LicenseClient.php';

$state = json_decode((string) file_get_contents((string) getenv('FAKE_STATE')), true);
$sk = base64_decode($state['sk']);
$path = parse_url($_SERVER['REQUEST_URI'], PHP_URL_PATH);

file_put_contents($state['log'], json_encode(array(
    'path' => $path,
    'method' => $_SERVER['REQUEST_METHOD'],
    'content_type' => $_SERVER['CONTENT_TYPE'] ?? '',
    'raw' => file_get_contents('php://input'),
    'post' => $_POST,
    'mode' => $state['mode'],
)) . "\n", FILE_APPEND);

function b64url(string $b): string
{
    return rtrim(strtr(base64_encode($b), '+/', '-_'), '=');
}

function send(int $code, string $body, string $sk, string $kid, string $type = 'application/json', array $extra = array()): void
{
    http_response_code($code);
    header('Content-Type: ' . $type);
    header('License-Signature: keyid="' . $kid . '", algorithm="ed25519", signature="'
        . base64_encode(sodium_crypto_sign_detached($body, $sk)) . '"');
    foreach ($extra as $h) {
        header($h);
    }
    echo $body;
}

if ($path === '/modules/servers/licensing/verify.php') {
    $lines = array('<status>Active</status>', '<registeredname>Test Co</registeredname>', '<validdomain>example.com</validdomain>');
    $signed = implode("\n", $lines) . "\n";
    $sig = sodium_crypto_sign_detached("whmcs-compat-v1\n" . ($_POST['check_token'] ?? '') . "\n" . $signed, $sk);
    header('Content-Type: text/plain');
    echo $signed . '<licensesignature>' . $state['kid'] . '.' . b64url($sig) . '</licensesignature>';
    exit;
}

$nonce = $_POST['nonce'] ?? '';
$now = $state['server_time'];
$mode = $state['mode'];

if ($mode === 'down') {
    http_response_code(503);
    echo 'Service Unavailable';
    exit;
}
if ($mode === 'sleep') {
    sleep(3);
}
if ($mode === 'rate_limited' || $mode === 'bad_request') {
    $code = $mode === 'rate_limited' ? 429 : 400;
    $problem = json_encode(array('type' => 'about:blank', 'title' => $code === 429 ? 'Too Many Requests' : 'Bad Request',
        'status' => $code, 'detail' => 'slow down', 'nonce' => $nonce, 'server_time' => $now));
    send($code, $problem, $sk, $state['kid'], 'application/problem+json',
        $code === 429 ? array('Retry-After: ' . $state['retry_after']) : array());
    exit;
}
if ($mode === 'garbage') {
    send(200, '<html>oops</html>', $sk, $state['kid'], 'text/html');
    exit;
}

$key = trim($_POST['license_key'] ?? '');
$domain = LicenseServer_Client::normaliseDomain($_POST['domain'] ?? '');
$body = array(
    'status' => $state['status'],
    'reason' => $state['reason'],
    'nonce' => $mode === 'wrong_nonce' ? 'AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA' : $nonce,
    'server_time' => $mode === 'stale' ? $now - 1000 : $now,
    'license' => array('product' => 'WIDGET', 'licensee' => 'Jane', 'company' => 'Test Co', 'expires_at' => null,
        'domains' => array($domain), 'ips' => array(), 'directories' => array(), 'features' => array('pro'), 'seats' => 3),
);
if ($state['status'] === 'active') {
    $header = b64url(json_encode(array('alg' => 'EdDSA', 'typ' => 'JWT', 'kid' => $state['kid'])));
    $claims = array('iss' => 'fake', 'sub' => '1', 'aud' => 'WIDGET', 'iat' => $now, 'exp' => $now + $state['ttl'],
        'grace_until' => $now + $state['ttl'] + $state['grace'], 'status' => 'active',
        'domain' => $mode === 'bad_local_key' ? 'other.example' : $domain, 'ip' => '', 'directory' => '',
        'lkh' => b64url(hash('sha256', $key, true)), 'features' => array('pro'), 'product' => 'WIDGET', 'licensee' => 'Jane');
    $payload = b64url(json_encode($claims));
    $body['local_key'] = $header . '.' . $payload . '.' . b64url(sodium_crypto_sign_detached($header . '.' . $payload, $sk));
}
$json = json_encode($body, JSON_UNESCAPED_SLASHES);

if ($mode === 'unknown_kid') {
    $other = sodium_crypto_sign_secretkey(sodium_crypto_sign_keypair());
    send(200, $json, $other, 'someone-else');
} elseif ($mode === 'no_header') {
    header('Content-Type: application/json');
    echo $json;
} elseif ($mode === 'tamper') {
    // Signed, then altered in transit.
    http_response_code(200);
    header('License-Signature: keyid="' . $state['kid'] . '", algorithm="ed25519", signature="'
        . base64_encode(sodium_crypto_sign_detached($json, $sk)) . '"');
    echo str_replace('"' . $state['status'] . '"', '"active"', str_replace('"ok"', '"ok" ', $json));
} else {
    send(200, $json, $sk, $state['kid']);
}
