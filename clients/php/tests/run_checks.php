<?php
/**
 * One license check from the command line, for the Python test-suite.
 *
 *   php run_checks.php CONFIG
 *
 * CONFIG is a JSON object, given inline (argv[1] starting with "{") or as a path to a JSON file:
 *   server_url      base URL of the license server (aliases: base_url, url)    required
 *   public_keys     {"kid": "<base64url x>"}, a whole JWKS {"keys": [...]},
 *                   or a list of JWKs                                            required
 *   license_key     the key to check                                             required
 *   domain          domain option; omit/null/"" to act like cron (no SERVER_NAME → cached key's domain)
 *   cache_path      cache file (alias: cache_file)                               required
 *   now             fake unix time for the client's clock (optional)
 *   timeout         total HTTP timeout in seconds (optional; connect timeout = min(3, timeout))
 * optional, passed through to LicenseServer_Client: ip, directory, product, issuer, check_interval,
 *   refused_retry, outage_retry, outage_retry_max, max_clock_skew, connect_timeout, transport
 * optional: server_name / http_host / server_addr to simulate a web request's $_SERVER,
 *   force (bool) to call check(true).
 *
 * Prints ONE line: {"status":..., "reason":..., "from_cache":bool, "message":..., "unverified":bool}
 * and exits 0.
 * A broken CONFIG prints status "error" and exits 2. Note: when `now` is far from real time,
 * a live server's server_time will (correctly) be rejected as stale_response.
 */

require __DIR__ . '/../LicenseClient.php';

function emit(array $out, int $exitCode): void
{
    echo json_encode($out, JSON_UNESCAPED_SLASHES | JSON_UNESCAPED_UNICODE), "\n";
    exit($exitCode);
}

function fail(string $message): void
{
    emit(array('status' => 'error', 'reason' => 'bad_config', 'from_cache' => false, 'message' => $message), 2);
}

$arg = $argv[1] ?? '';
if ($arg === '') {
    fail('usage: php run_checks.php CONFIG_JSON_OR_FILE');
}
$json = strncmp(ltrim($arg), '{', 1) === 0 ? $arg : @file_get_contents($arg);
$config = is_string($json) ? json_decode($json, true) : null;
if (!is_array($config)) {
    fail('config is not a JSON object');
}

// Accept {"kid": "x"}, a whole JWKS {"keys": [...]}, or a bare list of JWKs.
$keys = $config['public_keys'] ?? null;
if (is_array($keys) && isset($keys[0]) && is_array($keys[0])) {
    $keys = array('keys' => $keys);
}
if (is_array($keys) && isset($keys['keys'])) {
    $keys = LicenseServer_Client::keysFromJwks($keys);
}

$server = array();
foreach (array('server_name' => 'SERVER_NAME', 'http_host' => 'HTTP_HOST', 'server_addr' => 'SERVER_ADDR') as $from => $to) {
    if (isset($config[$from]) && is_string($config[$from])) {
        $server[$to] = $config[$from];
    }
}

$options = array(
    'server_url' => $config['server_url'] ?? ($config['base_url'] ?? ($config['url'] ?? null)),
    'public_keys' => $keys,
    'license_key' => $config['license_key'] ?? null,
    'cache_file' => $config['cache_path'] ?? ($config['cache_file'] ?? null),
    // Only what the config says: the CLI's own environment must not leak a SERVER_NAME in.
    'server' => $server,
);
if (isset($config['domain']) && $config['domain'] !== '') {
    $options['domain'] = $config['domain'];
}
if (isset($config['now'])) {
    $options['now'] = (int) $config['now'];
}
foreach (array('timeout', 'connect_timeout', 'ip', 'directory', 'product', 'issuer', 'check_interval', 'refused_retry',
             'outage_retry', 'outage_retry_max', 'max_clock_skew', 'transport') as $name) {
    if (isset($config[$name])) {
        $options[$name] = $config[$name];
    }
}
if (isset($options['timeout']) && !isset($options['connect_timeout']) && is_numeric($options['timeout'])) {
    $options['connect_timeout'] = min(3.0, (float) $options['timeout']);
}

try {
    $client = new LicenseServer_Client($options);
} catch (InvalidArgumentException $e) {
    fail($e->getMessage());
}

$result = $client->check(!empty($config['force']));
emit(array(
    'status' => $result->status,
    'reason' => $result->reason,
    'from_cache' => $result->fromCache,
    'message' => $result->message,
    'unverified' => $result->isUnverified(),
), 0);
