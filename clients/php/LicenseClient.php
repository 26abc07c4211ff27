<?php
/**
 * LicenseClient.php — license check client for WHMCS modules (and any PHP 7.4+ code)
 * that talk to the self-hosted license server.
 *
 * Copy this ONE file into your module, ship your server's public key(s) with it, and call
 * LicenseServer_Client::check(). It:
 *   - phones home with POST {server_url}/api/v1/verify (form-encoded, fresh nonce);
 *   - trusts nothing from the answer until the Ed25519 `License-Signature` over the raw body
 *     verifies with a key SHIPPED IN THE MODULE (never fetched at run time), the nonce echoes
 *     ours and `server_time` is within the allowed clock skew; an answer failing any of these
 *     is no answer at all: handled like an outage and flagged unverified, never a refusal;
 *   - caches the signed local key (a JWT) as JSON, so most page loads need no request, an
 *     outage degrades to "cached active" → "grace" → "unreachable", and refusals/outages back
 *     off instead of hammering the server on every page load.
 * It also contains LicenseServer_CompatSignature for modules still parsing the
 * WHMCS-compatible `<tag>value</tag>` endpoint.
 *
 * Requirements: PHP 7.4+, ext-sodium, ext-json; ext-curl recommended (falls back to
 * file_get_contents-style streams when curl is missing); ext-intl optional (IDN domains
 * have a built-in punycode fallback). No composer, no unserialize(): the cache is JSON only.
 *
 * The classes are declared only if absent, so two modules embedding this file do not fatal.
 * If you need your own copy isolated from another vendor's, rename the `LicenseServer_` prefix.
 *
 * @version 1.0.0
 */

if (!class_exists('LicenseServer_Client', false)) {

/**
 * Outcome of one license check. Plain value object: read the public properties.
 */
final class LicenseServer_Result
{
    const ACTIVE = 'active';
    const INVALID = 'invalid';
    const EXPIRED = 'expired';
    const SUSPENDED = 'suspended';
    const REVOKED = 'revoked';
    /** Server unreachable, cached local key expired, but still inside its signed grace period. */
    const GRACE = 'grace';
    /** Server unreachable and nothing cached that may stand in for it. */
    const UNREACHABLE = 'unreachable';

    /** @var string one of the constants above */
    public string $status;
    /** @var string machine-readable why, e.g. "ok", "domain_not_allowed", "tampered", "timeout" */
    public string $reason;
    /** @var bool true when no live, verified server decision was obtained during this call */
    public bool $fromCache;
    /** @var array|null license facts from the last verified server answer (product, licensee, features, ...) */
    public ?array $license;
    /** @var string human-readable English explanation, safe to show to an administrator */
    public string $message;
    /**
     * @var bool true when an answer came but failed its signature, nonce or freshness check
     *           (reason tampered, unknown_key_id, bad_nonce or stale_response): it was treated
     *           as no answer at all, and the status comes from the cache, grace or unreachable.
     */
    public bool $unverified;

    public function __construct(string $status, string $reason, bool $fromCache, ?array $license, string $message,
        bool $unverified = false)
    {
        $this->status = $status;
        $this->reason = $reason;
        $this->fromCache = $fromCache;
        $this->license = $license;
        $this->message = $message;
        $this->unverified = $unverified;
    }

    /** True when this call got an answer that could not be trusted (see $unverified). */
    public function isUnverified(): bool
    {
        return $this->unverified;
    }

    /** True when the module may run: active, or inside the grace period of an outage. */
    public function isActive(): bool
    {
        return $this->status === self::ACTIVE || $this->status === self::GRACE;
    }

    /** True when the (active) license lists $feature among its features. */
    public function hasFeature(string $feature): bool
    {
        if (!$this->isActive() || !is_array($this->license) || !isset($this->license['features'])
            || !is_array($this->license['features'])) {
            return false;
        }
        return in_array($feature, $this->license['features'], true);
    }

    public function toArray(): array
    {
        return array(
            'status' => $this->status,
            'reason' => $this->reason,
            'from_cache' => $this->fromCache,
            'license' => $this->license,
            'message' => $this->message,
            'unverified' => $this->unverified,
        );
    }
}

/**
 * Checks a license key against the license server, with a signed offline cache.
 *
 * Construct once per request with your options and call check(). check() never throws:
 * transport problems, tampering and bugs all come back as a LicenseServer_Result.
 * The constructor DOES throw InvalidArgumentException on a configuration mistake, so a
 * developer sees it at once instead of customers seeing "invalid".
 */
final class LicenseServer_Client
{
    const VERSION = '1.0.0';
    const CLIENT_VERSION = 'php-1.0.0';
    const VERIFY_PATH = '/api/v1/verify';
    const CACHE_FORMAT = 1;
    /** Decision bodies are a few KB; anything much larger is not our server. */
    const MAX_BODY_BYTES = 262144;
    /** Signing-context string of the WHMCS-compatible endpoint (see LicenseServer_CompatSignature). */
    const COMPAT_CONTEXT = "whmcs-compat-v1\n";

    /** @var array<string,string> kid => raw 32-byte Ed25519 public key */
    private array $publicKeys = array();
    private string $serverUrl;
    private string $licenseKey;
    private string $domainOption;
    private ?string $ipOption;
    private string $directory;
    private string $product;
    private string $issuer;
    private ?string $cacheFile = null;
    /** @var callable|null */
    private $cacheLoad = null;
    /** @var callable|null */
    private $cacheSave = null;
    private int $checkInterval;
    private int $refusedRetry;
    private int $outageRetry;
    private int $outageRetryMax;
    private int $maxClockSkew;
    private float $timeout;
    private float $connectTimeout;
    /** @var int|callable|null */
    private $now = null;
    private array $server;
    private string $transport;
    private ?string $caFile;
    /** @var callable|null */
    private $logger = null;

    /**
     * @param array $options see README.md; required: server_url, public_keys, license_key,
     *                       and either cache_file or both cache_load and cache_save.
     * @throws InvalidArgumentException on a configuration mistake
     */
    public function __construct(array $options)
    {
        $url = self::stringOption($options, 'server_url', self::stringOption($options, 'base_url', ''));
        if (!preg_match('#^https?://[^/?\#]+#i', $url)) {
            throw new InvalidArgumentException('server_url must be an http(s) URL, e.g. https://licenses.example.com');
        }
        $this->serverUrl = rtrim($url, '/');

        if (!isset($options['public_keys']) || !is_array($options['public_keys']) || !$options['public_keys']) {
            throw new InvalidArgumentException('public_keys must be a non-empty array of kid => base64url Ed25519 key');
        }
        foreach ($options['public_keys'] as $kid => $x) {
            $raw = is_string($x) ? self::b64urlDecode($x) : null;
            if (!is_string($kid) || $kid === '' || $raw === null || strlen($raw) !== SODIUM_CRYPTO_SIGN_PUBLICKEYBYTES) {
                throw new InvalidArgumentException('public_keys: entry "' . $kid . '" is not kid => base64url 32-byte key');
            }
            $this->publicKeys[$kid] = $raw;
        }

        $this->licenseKey = self::stringOption($options, 'license_key', '');
        $this->domainOption = self::stringOption($options, 'domain', '');
        $this->ipOption = isset($options['ip']) && is_string($options['ip']) ? $options['ip'] : null;
        $this->directory = self::stringOption($options, 'directory', '');
        $this->product = self::stringOption($options, 'product', '');
        $this->issuer = self::stringOption($options, 'issuer', '');

        $this->configureCache($options);

        $this->checkInterval = self::intOption($options, 'check_interval', 86400, 0);
        $this->refusedRetry = self::intOption($options, 'refused_retry', 3600, 0);
        $this->outageRetry = self::intOption($options, 'outage_retry', 300, 1);
        $this->outageRetryMax = max($this->outageRetry, self::intOption($options, 'outage_retry_max', 21600, 1));
        $this->maxClockSkew = self::intOption($options, 'max_clock_skew', 300, 0);
        $this->timeout = self::floatOption($options, 'timeout', 5.0);
        $this->connectTimeout = min($this->timeout, self::floatOption($options, 'connect_timeout', 3.0));

        if (isset($options['now'])) {
            if (!is_numeric($options['now']) && !is_callable($options['now'])) {
                throw new InvalidArgumentException('now must be a unix timestamp or a callable returning one');
            }
            $this->now = $options['now'];
        }
        $this->server = isset($options['server']) && is_array($options['server']) ? $options['server'] : $_SERVER;
        $this->transport = self::stringOption($options, 'transport', 'auto');
        if (!in_array($this->transport, array('auto', 'curl', 'stream'), true)) {
            throw new InvalidArgumentException('transport must be auto, curl or stream');
        }
        $this->caFile = isset($options['ca_file']) && is_string($options['ca_file']) ? $options['ca_file'] : null;
        if (isset($options['logger'])) {
            if (!is_callable($options['logger'])) {
                throw new InvalidArgumentException('logger must be callable(string $message)');
            }
            $this->logger = $options['logger'];
        }
    }

    /**
     * Decide whether the license is usable right now, phoning home only when needed.
     *
     * @param bool $force skip the fresh-cache shortcut and any back-off (e.g. an admin's
     *                    "re-check now" button). Do not call with true on every page load.
     */
    public function check(bool $force = false): LicenseServer_Result
    {
        try {
            return $this->run($force);
        } catch (Throwable $e) {
            // A licensing bug must not take the customer's WHMCS down with a fatal error.
            $this->log('internal error: ' . get_class($e) . ': ' . $e->getMessage());
            return new LicenseServer_Result(LicenseServer_Result::UNREACHABLE, 'internal_error', false, null,
                'The license check failed unexpectedly: ' . $e->getMessage());
        }
    }

    /** Forget everything cached (local key, last decision, back-off). */
    public function clearCache(): void
    {
        $this->saveCache(self::emptyCache());
    }

    /**
     * Normalise a domain exactly like the server (license_server/licensing/domains.py), so that
     * the domain sent, cached and compared with the local key is the one the server binds.
     * Returns '' for anything the server refuses. Rules: trim (Unicode white space), lower
     * case, no scheme, userinfo, port, path, query, fragment or trailing dot; IP addresses in
     * the server's canonical text (IPv4 strictly dotted-decimal, so "127.1" and "0x7f.1" are
     * refused; IPv6 per RFC 5952, IPv4-mapped ones as IPv4); names as LDH labels of 1-63
     * characters, at most 253 in all, internationalised ones as A-labels (UTS #46 with
     * UseSTD3ASCIIRules and IDNA2008 validity, RFC 5891); leading "www." dropped while more
     * than two labels remain. tests/test_normaliser_parity.py runs the server's test corpus and
     * generated hosts through this function and the server's and asserts equal results.
     */
    public static function normaliseDomain(string $domain): string
    {
        if (strlen($domain) > 65536 || !preg_match('//u', $domain)) {
            return ''; // not UTF-8, or absurdly long: no host name
        }
        $text = self::pythonLower(preg_replace('/^' . self::SPACE . '+|' . self::SPACE . '+$/u', '', $domain));
        if (preg_match('#^[a-z][a-z0-9+.-]*://#', $text, $m)) {
            $text = substr($text, strlen($m[0]));
        }
        if (strncmp($text, '//', 2) === 0) {
            $text = substr($text, 2); // scheme-relative "//example.com"
        }
        // The authority ends at the first path, query or fragment delimiter (RFC 3986 3.2);
        // userinfo ends at its last "@".
        $text = preg_split('#[/?\#]#', $text, 2)[0];
        $at = strrpos($text, '@');
        if ($at !== false) {
            $text = substr($text, $at + 1);
        }
        if ($text !== '' && $text[0] === '[') {
            $end = strpos($text, ']');
            if ($end === false || !self::portOk(substr($text, $end + 1))) {
                return '';
            }
            return self::canonicalIp(substr($text, 1, $end - 1));
        }
        if (substr_count($text, ':') === 1) { // more than one colon: a bare IPv6 address
            $colon = strpos($text, ':');
            if (!self::portOk(substr($text, $colon))) {
                return '';
            }
            $text = substr($text, 0, $colon);
        }
        return strpos($text, ':') !== false ? self::canonicalIp($text) : self::canonicalName($text);
    }

    /** Characters Python's str.strip() removes (str.isspace), as a PCRE class. */
    const SPACE = '[\x{9}-\x{d}\x{1c}-\x{20}\x{85}\x{a0}\x{1680}\x{2000}-\x{200a}\x{2028}\x{2029}\x{202f}\x{205f}\x{3000}]';

    private static function portOk(string $suffix): bool
    {
        return $suffix === '' || (preg_match('/^:[0-9]{1,5}$/', $suffix) === 1 && (int) substr($suffix, 1) <= 65535);
    }

    /**
     * An IP address in the text Python's ipaddress writes, or '' when it is none: IPv4 only as
     * four decimal octets without leading zeros; IPv6 without zone id, IPv4-mapped as IPv4,
     * otherwise lowercase hex groups without leading zeros and the longest run (first on a
     * tie) of two or more zero groups as "::".
     */
    private static function canonicalIp(string $text): string
    {
        $octet = '(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])';
        if (preg_match('/^' . $octet . '(?:\.' . $octet . '){3}$/', $text)) {
            return $text;
        }
        if (!preg_match('/^[0-9a-f:.]+$/', $text) || strpos($text, ':') === false) {
            return ''; // also refuses zone ids ("fe80::1%eth0"): they only mean something locally
        }
        $dot = strpos($text, '.');
        if ($dot !== false) {
            // An embedded IPv4 part must be last and strictly dotted-decimal, as in Python.
            $tail = substr($text, strrpos($text, ':') + 1);
            if (!preg_match('/^' . $octet . '(?:\.' . $octet . '){3}$/', $tail)) {
                return '';
            }
        }
        $packed = @inet_pton($text);
        if (!is_string($packed) || strlen($packed) !== 16) {
            return '';
        }
        if (strncmp($packed, str_repeat("\0", 10) . "\xff\xff", 12) === 0) {
            return implode('.', array_values(unpack('C4', substr($packed, 12))));
        }
        $groups = array_values(unpack('n8', $packed));
        $bestStart = -1;
        $bestLength = 1;
        for ($i = 0; $i < 8; $i++) {
            $length = 0;
            while ($i + $length < 8 && $groups[$i + $length] === 0) {
                $length++;
            }
            if ($length > $bestLength) {
                $bestStart = $i;
                $bestLength = $length;
            }
            $i += $length;
        }
        $hex = array_map('dechex', $groups);
        if ($bestStart < 0) {
            return implode(':', $hex);
        }
        return implode(':', array_slice($hex, 0, $bestStart)) . '::'
            . implode(':', array_slice($hex, $bestStart + $bestLength));
    }

    /** A host name in canonical form (see normaliseDomain), or '' when the server refuses it. */
    private static function canonicalName(string $host): string
    {
        $name = rtrim($host, '.');
        // Plain ASCII names skip IDNA, as on the server: IDNA2008 would refuse real RFC 1123
        // names such as "r3---sn-abc".
        if (preg_match('/[^\x00-\x7f]/', $name) || preg_match('/(?:^|\.)xn--/', $name)) {
            $name = rtrim(self::idnToAscii($name), '.');
        }
        if ($name === '' || strlen($name) > 253) {
            return '';
        }
        $labels = explode('.', $name);
        foreach ($labels as $label) {
            if (!preg_match('/^[a-z0-9-]{1,63}$/', $label) || $label[0] === '-' || substr($label, -1) === '-') {
                return '';
            }
        }
        if (preg_match('/^[0-9]+$/', end($labels))) {
            return self::canonicalIp($name); // an all-numeric top label is only ever IPv4
        }
        while ($labels[0] === 'www' && count($labels) > 2) { // "www.www.x.com" -> "x.com"
            array_shift($labels);
        }
        return implode('.', $labels);
    }

    /**
     * Turn the server's /.well-known/jwks.json (string or decoded array) into the
     * kid => x array that `public_keys` expects. Use it at BUILD time to produce the
     * array you paste into your module; do not feed it a live download.
     */
    public static function keysFromJwks($jwks): array
    {
        if (is_string($jwks)) {
            $jwks = json_decode($jwks, true);
        }
        $keys = array();
        if (is_array($jwks) && isset($jwks['keys']) && is_array($jwks['keys'])) {
            foreach ($jwks['keys'] as $jwk) {
                if (is_array($jwk) && ($jwk['kty'] ?? null) === 'OKP' && ($jwk['crv'] ?? null) === 'Ed25519'
                    && isset($jwk['kid'], $jwk['x']) && is_string($jwk['kid']) && is_string($jwk['x'])) {
                    $keys[$jwk['kid']] = $jwk['x'];
                }
            }
        }
        return $keys;
    }

    /** The `lkh` claim value for a license key: base64url(sha256(trimmed key)), no padding. */
    public static function licenseKeyHash(string $licenseKey): string
    {
        return self::b64urlEncode(hash('sha256', trim($licenseKey), true));
    }

    // ------------------------------------------------------------------ the decision flow

    private function run(bool $force): LicenseServer_Result
    {
        $now = $this->now();
        $licenseKey = trim($this->licenseKey);
        if ($licenseKey === '') {
            return $this->result(LicenseServer_Result::INVALID, 'no_license_key', false, null);
        }
        $lkh = self::licenseKeyHash($licenseKey);
        $cache = $this->loadCache();

        $domain = $this->resolveDomain($cache, $lkh);
        if ($domain === '') {
            // Never send an empty domain: the server would bind (or refuse) the wrong thing.
            return $this->result(LicenseServer_Result::INVALID, 'no_domain', false, null);
        }
        if (!hash_equals($cache['lkh'], $lkh) || $cache['domain'] !== $domain) {
            // A new key or domain must not inherit the old one's refusal or back-off:
            // a customer who fixes a typo in the key gets an answer at once.
            $cache = self::emptyCache();
            $cache['lkh'] = $lkh;
            $cache['domain'] = $domain;
        }

        if (!$force) {
            $claims = $this->cachedClaims($cache, $lkh, $domain);
            $age = $now - $cache['fetched_at'];
            if ($claims !== null && $claims['exp'] > $now && $age >= 0 && $age < $this->checkInterval) {
                $decision = $this->cachedDecision($cache);
                $reason = $decision !== null && $decision['status'] === LicenseServer_Result::ACTIVE
                    ? $decision['reason'] : 'ok';
                return $this->result(LicenseServer_Result::ACTIVE, $reason, true,
                    $this->cachedLicense($decision, $claims));
            }
            $backoff = $cache['backoff'];
            if ($backoff !== null && $now < $backoff['until']) {
                $replay = $this->replayBackoff($cache, $backoff, $lkh, $domain, $now);
                if ($replay !== null) {
                    return $replay;
                }
            }
        }
        return $this->phoneHome($cache, $licenseKey, $lkh, $domain, $now);
    }

    /**
     * The domain to check: configured option, then the web server's name, then (cron/CLI)
     * the domain the cached, signature-verified local key is bound to.
     */
    private function resolveDomain(array $cache, string $lkh): string
    {
        if ($this->domainOption !== '') {
            return self::normaliseDomain($this->domainOption);
        }
        foreach (array('SERVER_NAME', 'HTTP_HOST') as $var) {
            if (isset($this->server[$var]) && is_string($this->server[$var])) {
                $domain = self::normaliseDomain($this->server[$var]);
                if ($domain !== '') {
                    return $domain;
                }
            }
        }
        if (!hash_equals($cache['lkh'], $lkh)) {
            return '';
        }
        $claims = $this->verifiedClaims($cache['local_key']);
        if ($claims !== null && isset($claims['lkh']) && is_string($claims['lkh']) && hash_equals($claims['lkh'], $lkh)
            && isset($claims['domain']) && is_string($claims['domain'])) {
            return self::normaliseDomain($claims['domain']);
        }
        // No local key (e.g. after a refusal): the domain we last asked about is still the
        // best guess, and sending it is harmless because the server decides.
        return $cache['domain'];
    }

    /** Result to return while a back-off is running, without a request; null = phone home. */
    private function replayBackoff(array $cache, array $backoff, string $lkh, string $domain, int $now): ?LicenseServer_Result
    {
        switch ($backoff['kind']) {
            case 'refused':
                $decision = $this->cachedDecision($cache);
                if ($decision === null || $decision['status'] === LicenseServer_Result::ACTIVE) {
                    return null; // cache edited or inconsistent: ask the server
                }
                return $this->result($decision['status'], $decision['reason'], true, $decision['license']);
            case 'local_key':
                return $this->result(LicenseServer_Result::INVALID, $backoff['reason'], true, null);
            case 'verify':
                return $this->fallback($cache, $lkh, $domain, $now, $backoff['reason'], true, '', true);
            case 'outage':
                return $this->fallback($cache, $lkh, $domain, $now, $backoff['reason'], true, '');
        }
        return null;
    }

    private function phoneHome(array $cache, string $licenseKey, string $lkh, string $domain, int $now): LicenseServer_Result
    {
        $nonce = self::newNonce();
        $fields = array(
            'license_key' => $licenseKey,
            'domain' => $domain,
            'ip' => $this->serverIp(),
            'directory' => $this->directory,
        );
        if ($this->product !== '') {
            $fields['product'] = $this->product;
        }
        $fields['client_version'] = self::CLIENT_VERSION;
        $fields['nonce'] = $nonce;

        $response = $this->post($this->serverUrl . self::VERIFY_PATH, http_build_query($fields, '', '&', PHP_QUERY_RFC1738));
        if ($response['error'] !== null) {
            return $this->outage($cache, $lkh, $domain, $now, $response['error'], null, $response['detail']);
        }
        $code = $response['status'];
        if ($code === 429) {
            return $this->outage($cache, $lkh, $domain, $now, 'rate_limited', $this->retryAfter($response['headers'], $now), '');
        }
        if ($code !== 200) {
            $reason = $code >= 500 ? 'server_error' : ($code >= 400 ? 'request_rejected' : 'bad_response');
            return $this->outage($cache, $lkh, $domain, $now, $reason, null, $this->problemDetail($response, $code));
        }

        $signatureProblem = $this->checkBodySignature($response['body'], $response['headers']);
        if ($signatureProblem !== null) {
            return $this->unverified($cache, $lkh, $domain, $now, $signatureProblem);
        }
        $data = self::jsonObject($response['body']);
        if ($data === null) {
            return $this->outage($cache, $lkh, $domain, $now, 'bad_response', null, 'the answer is not a JSON object');
        }
        if (!isset($data['nonce']) || !is_string($data['nonce']) || !hash_equals($nonce, $data['nonce'])) {
            return $this->unverified($cache, $lkh, $domain, $now, 'bad_nonce');
        }
        $serverTime = self::unixTime($data['server_time'] ?? null);
        if ($serverTime === null || abs($serverTime - $now) > $this->maxClockSkew) {
            return $this->unverified($cache, $lkh, $domain, $now, 'stale_response');
        }
        if (!isset($data['status']) || !is_string($data['status'])) {
            return $this->outage($cache, $lkh, $domain, $now, 'bad_response', null, 'the answer has no status');
        }
        $decision = self::decisionFromBody($data);
        $stored = array(
            'status' => $decision['status'],
            'reason' => $decision['reason'],
            'time' => $now,
            'body' => $response['body'],
            'signature' => $response['headers']['license-signature'][0],
        );

        if ($decision['status'] === LicenseServer_Result::ACTIVE) {
            $localKey = isset($data['local_key']) && is_string($data['local_key']) ? $data['local_key'] : null;
            $claims = $this->verifiedClaims($localKey);
            if ($claims === null || !$this->claimsBindTo($claims, $lkh, $domain) || $claims['exp'] <= $now) {
                return $this->localKeyRefused($cache, $now);
            }
            $cache['local_key'] = $localKey;
            $cache['fetched_at'] = $now;
            $cache['decision'] = $stored;
            $cache['backoff'] = null;
            $cache['failures'] = 0;
            $this->saveCache($cache);
            return $this->result(LicenseServer_Result::ACTIVE, $decision['reason'], false, $decision['license']);
        }

        // A refusal: drop the local key so an outage cannot resurrect a revoked license, and
        // back off so an invalid key does not phone home on every page load.
        $cache['local_key'] = null;
        $cache['fetched_at'] = 0;
        $cache['decision'] = $stored;
        $cache['backoff'] = array('kind' => 'refused', 'until' => $now + $this->refusedRetry, 'reason' => $decision['reason']);
        $cache['failures'] = 0;
        $this->saveCache($cache);
        return $this->result($decision['status'], $decision['reason'], false, $decision['license']);
    }

    /**
     * Something answered, but the answer failed its signature, key id, nonce or freshness
     * check: it proves nothing, so it is no answer at all. Were it a refusal, whoever can strip
     * one header between module and server could switch a paying site off; so it is handled
     * exactly like an outage (cached local key, then grace, then unreachable; the same
     * back-off) and flagged unverified, with the failed check as the reason.
     */
    private function unverified(array $cache, string $lkh, string $domain, int $now, string $reason): LicenseServer_Result
    {
        $this->log('unverifiable answer, treated as an outage: ' . $reason);
        $cache['failures']++;
        $cache['backoff'] = array('kind' => 'verify', 'until' => $now + $this->backoffDelay($cache['failures']), 'reason' => $reason);
        $this->saveCache($cache);
        return $this->fallback($cache, $lkh, $domain, $now, $reason, false, '', true);
    }

    /**
     * A verified `active` answer whose local key does not verify or is not bound to this key,
     * domain or product: the server's own word, so a refusal, backed off like one.
     */
    private function localKeyRefused(array $cache, int $now): LicenseServer_Result
    {
        $this->log('the signed answer carries an unusable local key');
        $cache['failures']++;
        $cache['backoff'] = array('kind' => 'local_key', 'until' => $now + $this->backoffDelay($cache['failures']), 'reason' => 'bad_local_key');
        $this->saveCache($cache);
        return $this->result(LicenseServer_Result::INVALID, 'bad_local_key', false, null);
    }

    /** No usable answer: fall back on the cache and back off (Retry-After wins when given). */
    private function outage(array $cache, string $lkh, string $domain, int $now, string $reason, ?int $retryAfter, string $detail): LicenseServer_Result
    {
        $this->log('license server unusable: ' . $reason . ($detail !== '' ? ' (' . $detail . ')' : ''));
        $cache['failures']++;
        $delay = $retryAfter !== null ? $retryAfter : $this->backoffDelay($cache['failures']);
        $cache['backoff'] = array('kind' => 'outage', 'until' => $now + $delay, 'reason' => $reason);
        $this->saveCache($cache);
        return $this->fallback($cache, $lkh, $domain, $now, $reason, false, $detail);
    }

    /** What a cached local key still allows when the server cannot be asked. */
    private function fallback(array $cache, string $lkh, string $domain, int $now, string $reason, bool $replay, string $detail,
        bool $unverified = false): LicenseServer_Result
    {
        $claims = $this->cachedClaims($cache, $lkh, $domain);
        $decision = $this->cachedDecision($cache);
        $why = self::describe($reason) . ($detail !== '' ? ' (' . $detail . ')' : '');
        if ($claims !== null && $claims['exp'] > $now) {
            return new LicenseServer_Result(LicenseServer_Result::ACTIVE, $reason, true, $this->cachedLicense($decision, $claims),
                'License active from the cached local key (valid until ' . self::date($claims['exp']) . '). ' . $why, $unverified);
        }
        if ($claims !== null && $now < $claims['grace_until']) {
            return new LicenseServer_Result(LicenseServer_Result::GRACE, $reason, true, $this->cachedLicense($decision, $claims),
                'License in grace period until ' . self::date($claims['grace_until'])
                . ': the license server must be reached before then. ' . $why, $unverified);
        }
        $message = 'The license could not be verified. ' . $why;
        if ($decision !== null && $decision['status'] !== LicenseServer_Result::ACTIVE) {
            $message .= ' The last answer from the license server was: ' . $decision['status'] . ' (' . $decision['reason'] . ').';
        }
        return new LicenseServer_Result(LicenseServer_Result::UNREACHABLE, $reason, $replay, null, $message, $unverified);
    }

    private function backoffDelay(int $failures): int
    {
        $delay = $this->outageRetry;
        for ($i = 1; $i < $failures && $delay < $this->outageRetryMax; $i++) {
            $delay *= 2;
        }
        return min($delay, $this->outageRetryMax);
    }

    /** Retry-After as delta-seconds or HTTP-date; capped so a hostile value cannot silence us forever. */
    private function retryAfter(array $headers, int $now): ?int
    {
        if (!isset($headers['retry-after'][0])) {
            return null;
        }
        $value = trim($headers['retry-after'][0]);
        if (preg_match('/^[0-9]+$/', $value)) {
            $seconds = (int) $value;
        } else {
            $when = strtotime($value);
            if ($when === false) {
                return null;
            }
            $seconds = $when - $now;
        }
        return max(1, min($seconds, $this->outageRetryMax));
    }

    /** Title/detail of a signed problem document, for the log and message only. */
    private function problemDetail(array $response, int $code): string
    {
        $detail = 'HTTP ' . $code;
        if ($this->checkBodySignature($response['body'], $response['headers']) === null) {
            $problem = self::jsonObject($response['body']);
            if ($problem !== null) {
                foreach (array('title', 'detail') as $field) {
                    if (isset($problem[$field]) && is_string($problem[$field]) && $problem[$field] !== '') {
                        $detail .= ': ' . substr($problem[$field], 0, 300);
                    }
                }
            }
        }
        return $detail;
    }

    /** status/reason/license of a verified decision body, status mapped onto our constants. */
    private static function decisionFromBody(array $data): array
    {
        $known = array(LicenseServer_Result::ACTIVE, LicenseServer_Result::INVALID, LicenseServer_Result::EXPIRED,
            LicenseServer_Result::SUSPENDED, LicenseServer_Result::REVOKED);
        $status = isset($data['status']) && is_string($data['status']) ? $data['status'] : '';
        $reason = isset($data['reason']) && is_string($data['reason']) ? $data['reason'] : '';
        if (!in_array($status, $known, true)) {
            // A newer server's unknown refusal is still a refusal; never an accidental yes.
            $reason = $reason !== '' ? $reason : 'unknown_status';
            $status = LicenseServer_Result::INVALID;
        }
        return array(
            'status' => $status,
            'reason' => $reason !== '' ? $reason : $status,
            'license' => isset($data['license']) && is_array($data['license']) ? $data['license'] : null,
        );
    }

    // ------------------------------------------------------------------ cache

    private static function emptyCache(): array
    {
        return array(
            'v' => self::CACHE_FORMAT,
            'lkh' => '',
            'domain' => '',
            'local_key' => null,
            'fetched_at' => 0,
            'decision' => null,
            'backoff' => null,
            'failures' => 0,
        );
    }

    private function configureCache(array $options): void
    {
        $hasLoad = isset($options['cache_load']);
        $hasSave = isset($options['cache_save']);
        if ($hasLoad || $hasSave) {
            if (!$hasLoad || !$hasSave || !is_callable($options['cache_load']) || !is_callable($options['cache_save'])) {
                throw new InvalidArgumentException('cache_load and cache_save must both be callables');
            }
            $this->cacheLoad = $options['cache_load'];
            $this->cacheSave = $options['cache_save'];
            return;
        }
        // A cache is mandatory: without one every page load would phone home.
        if (!isset($options['cache_file']) || !is_string($options['cache_file']) || $options['cache_file'] === '') {
            throw new InvalidArgumentException('set cache_file, or cache_load and cache_save');
        }
        $this->cacheFile = $options['cache_file'];
    }

    /** The cache as a well-formed array; anything unreadable or odd counts as empty. */
    private function loadCache(): array
    {
        $cache = self::emptyCache();
        $raw = null;
        try {
            if ($this->cacheLoad !== null) {
                $raw = call_user_func($this->cacheLoad);
            } elseif (is_file($this->cacheFile)) {
                $raw = @file_get_contents($this->cacheFile, false, null, 0, 1048576);
            }
        } catch (Throwable $e) {
            $this->log('cache_load failed: ' . $e->getMessage());
        }
        $data = is_string($raw) ? self::jsonObject($raw) : null;
        if ($data === null || ($data['v'] ?? null) !== self::CACHE_FORMAT) {
            return $cache;
        }
        foreach (array('lkh', 'domain') as $field) {
            if (isset($data[$field]) && is_string($data[$field])) {
                $cache[$field] = $data[$field];
            }
        }
        if (isset($data['local_key']) && is_string($data['local_key'])) {
            $cache['local_key'] = $data['local_key'];
        }
        foreach (array('fetched_at', 'failures') as $field) {
            if (isset($data[$field]) && is_int($data[$field]) && $data[$field] >= 0) {
                $cache[$field] = $data[$field];
            }
        }
        $d = $data['decision'] ?? null;
        if (is_array($d) && isset($d['body'], $d['signature'], $d['time']) && is_string($d['body'])
            && is_string($d['signature']) && is_int($d['time'])) {
            $cache['decision'] = array(
                'status' => isset($d['status']) && is_string($d['status']) ? $d['status'] : '',
                'reason' => isset($d['reason']) && is_string($d['reason']) ? $d['reason'] : '',
                'time' => $d['time'],
                'body' => $d['body'],
                'signature' => $d['signature'],
            );
        }
        $b = $data['backoff'] ?? null;
        if (is_array($b) && isset($b['kind'], $b['until'], $b['reason']) && is_string($b['kind'])
            && is_int($b['until']) && is_string($b['reason'])) {
            $cache['backoff'] = array('kind' => $b['kind'], 'until' => $b['until'], 'reason' => $b['reason']);
        }
        return $cache;
    }

    private function saveCache(array $cache): void
    {
        $json = json_encode($cache, JSON_UNESCAPED_SLASHES | JSON_PRETTY_PRINT);
        if (!is_string($json)) {
            $this->log('cache not saved: json_encode failed');
            return;
        }
        try {
            if ($this->cacheSave !== null) {
                call_user_func($this->cacheSave, $json);
                return;
            }
            $this->writeFileAtomically($this->cacheFile, $json . "\n");
        } catch (Throwable $e) {
            $this->log('cache not saved: ' . $e->getMessage());
        }
    }

    /** temp file + rename, so a concurrent page load never reads half a cache; mode 0600. */
    private function writeFileAtomically(string $path, string $contents): void
    {
        $tmp = $path . '.' . bin2hex(random_bytes(6)) . '.tmp';
        $fp = @fopen($tmp, 'xb');
        if ($fp === false) {
            $this->log('cache not saved: cannot create ' . $tmp);
            return;
        }
        @chmod($tmp, 0600);
        $written = fwrite($fp, $contents);
        fflush($fp);
        fclose($fp);
        if ($written !== strlen($contents) || !@rename($tmp, $path)) {
            @unlink($tmp);
            $this->log('cache not saved: cannot write ' . $path);
        }
    }

    /** Claims of the cached local key if it verifies and is bound to this key and domain (exp NOT checked). */
    private function cachedClaims(array $cache, string $lkh, string $domain): ?array
    {
        $claims = $this->verifiedClaims($cache['local_key']);
        return $claims !== null && $this->claimsBindTo($claims, $lkh, $domain) ? $claims : null;
    }

    /**
     * The cached last decision, re-verified: the cache file is writable by the customer,
     * so only bytes the server signed are believed.
     */
    private function cachedDecision(array $cache): ?array
    {
        $d = $cache['decision'];
        if ($d === null || $this->checkBodySignature($d['body'], array('license-signature' => array($d['signature']))) !== null) {
            return null;
        }
        $data = self::jsonObject($d['body']);
        return $data === null ? null : self::decisionFromBody($data);
    }

    private function cachedLicense(?array $decision, array $claims): ?array
    {
        if ($decision !== null && $decision['status'] === LicenseServer_Result::ACTIVE && $decision['license'] !== null) {
            return $decision['license'];
        }
        $license = array();
        foreach (array('product', 'licensee', 'features') as $claim) {
            if (isset($claims[$claim])) {
                $license[$claim] = $claims[$claim];
            }
        }
        return $license;
    }

    // ------------------------------------------------------------------ signatures

    /**
     * null when the raw body carries a valid License-Signature from a shipped key, otherwise
     * 'unknown_key_id' or 'tampered'.
     */
    private function checkBodySignature(string $body, array $headers): ?string
    {
        if (!isset($headers['license-signature']) || count($headers['license-signature']) !== 1) {
            return 'tampered';
        }
        $parsed = self::parseSignatureHeader($headers['license-signature'][0]);
        if ($parsed === null) {
            return 'tampered';
        }
        if (!isset($this->publicKeys[$parsed['keyid']])) {
            return 'unknown_key_id';
        }
        return self::ed25519Verify($parsed['signature'], $body, $this->publicKeys[$parsed['keyid']]) ? null : 'tampered';
    }

    /**
     * Strict parse of `keyid="..", algorithm="ed25519", signature="<base64>"`: every parameter
     * quoted, none repeated, all three present, 64-byte signature in padded standard base64.
     *
     * @return array|null ['keyid' => string, 'signature' => raw 64 bytes]
     */
    public static function parseSignatureHeader(string $header): ?array
    {
        $param = '[A-Za-z][A-Za-z0-9_-]*="[^"\\\\]*"';
        if (!preg_match('/^\s*' . $param . '(?:\s*,\s*' . $param . ')*\s*$/', $header)) {
            return null;
        }
        preg_match_all('/([A-Za-z][A-Za-z0-9_-]*)="([^"\\\\]*)"/', $header, $matches, PREG_SET_ORDER);
        $params = array();
        foreach ($matches as $m) {
            $name = strtolower($m[1]);
            if (isset($params[$name])) {
                return null;
            }
            $params[$name] = $m[2];
        }
        if (!isset($params['keyid'], $params['algorithm'], $params['signature']) || $params['keyid'] === ''
            || strtolower($params['algorithm']) !== 'ed25519'
            || !preg_match('#^[A-Za-z0-9+/]{86}==$#', $params['signature'])) {
            return null;
        }
        $signature = base64_decode($params['signature'], true);
        if (!is_string($signature) || strlen($signature) !== SODIUM_CRYPTO_SIGN_BYTES) {
            return null;
        }
        return array('keyid' => $params['keyid'], 'signature' => $signature);
    }

    /** Payload of a compact JWS signed with a shipped key (EdDSA/Ed25519), else null. Claims unchecked. */
    private function verifiedClaims(?string $jwt): ?array
    {
        if ($jwt === null || strlen($jwt) > 16384) {
            return null;
        }
        $parts = explode('.', $jwt);
        if (count($parts) !== 3) {
            return null;
        }
        $header = self::jsonObject(self::b64urlDecode($parts[0]));
        $payload = self::jsonObject(self::b64urlDecode($parts[1]));
        $signature = self::b64urlDecode($parts[2]);
        if ($header === null || $payload === null || $signature === null) {
            return null;
        }
        $alg = $header['alg'] ?? null;
        $kid = $header['kid'] ?? null;
        // `crit` would name extensions we do not implement, so we may not ignore them.
        if (($alg !== 'EdDSA' && $alg !== 'Ed25519') || isset($header['crit'])
            || !is_string($kid) || !isset($this->publicKeys[$kid])) {
            return null;
        }
        return self::ed25519Verify($signature, $parts[0] . '.' . $parts[1], $this->publicKeys[$kid]) ? $payload : null;
    }

    /** Does a verified local key belong to this license key, domain (and product/issuer if configured)? */
    private function claimsBindTo(array &$claims, string $lkh, string $domain): bool
    {
        $exp = self::unixTime($claims['exp'] ?? null);
        if ($exp === null || !isset($claims['lkh'], $claims['domain'], $claims['status'])
            || !is_string($claims['lkh']) || !is_string($claims['domain']) || $claims['status'] !== 'active') {
            return false;
        }
        $grace = self::unixTime($claims['grace_until'] ?? null);
        $claims['exp'] = $exp;
        $claims['grace_until'] = max($grace === null ? $exp : $grace, $exp);
        if (!hash_equals($claims['lkh'], $lkh) || !hash_equals(self::normaliseDomain($claims['domain']), $domain)) {
            return false;
        }
        if ($this->product !== '') {
            // Product codes are case-insensitive (the server stores them in lower case).
            $want = strtolower(trim($this->product));
            $aud = $claims['aud'] ?? ($claims['product'] ?? null);
            $auds = is_array($aud) ? $aud : array($aud);
            $match = false;
            foreach ($auds as $one) {
                $match = $match || (is_string($one) && strtolower($one) === $want);
            }
            if (!$match) {
                return false;
            }
        }
        if ($this->issuer !== '' && ($claims['iss'] ?? null) !== $this->issuer) {
            return false;
        }
        return true;
    }

    /** @internal shared with LicenseServer_CompatSignature */
    public static function ed25519Verify(string $signature, string $message, string $publicKey): bool
    {
        if (strlen($signature) !== SODIUM_CRYPTO_SIGN_BYTES || strlen($publicKey) !== SODIUM_CRYPTO_SIGN_PUBLICKEYBYTES) {
            return false;
        }
        try {
            return sodium_crypto_sign_verify_detached($signature, $message, $publicKey);
        } catch (Throwable $e) {
            return false;
        }
    }

    // ------------------------------------------------------------------ transport

    /**
     * POST a form body. Never follows redirects (a redirect is not a decision).
     *
     * @return array{error: ?string, detail: string, status: int, headers: array, body: string}
     *         headers are lowercase name => list of values
     */
    private function post(string $url, string $body): array
    {
        $headers = array(
            'Content-Type: application/x-www-form-urlencoded',
            'Accept: application/json, application/problem+json',
            'User-Agent: LicenseServer-PHP/' . self::VERSION,
        );
        if ($this->transport === 'curl' || ($this->transport === 'auto' && function_exists('curl_init'))) {
            if (!function_exists('curl_init')) {
                return self::transportError('no_transport', 'ext-curl is not loaded');
            }
            return $this->postWithCurl($url, $body, $headers);
        }
        // Core functions only: ext-ctype/ext-filter are not guaranteed on shared hosts.
        if (!in_array(strtolower((string) ini_get('allow_url_fopen')), array('1', 'on', 'true', 'yes'), true)) {
            return self::transportError('no_transport', 'neither ext-curl nor allow_url_fopen is available');
        }
        return $this->postWithStream($url, $body, $headers);
    }

    private function postWithCurl(string $url, string $body, array $headers): array
    {
        $responseHeaders = array();
        $responseBody = '';
        $tooLarge = false;
        $ch = curl_init($url);
        $options = array(
            CURLOPT_POST => true,
            CURLOPT_POSTFIELDS => $body,
            CURLOPT_HTTPHEADER => array_merge($headers, array('Expect:')),
            CURLOPT_FOLLOWLOCATION => false,
            CURLOPT_CONNECTTIMEOUT_MS => (int) ceil($this->connectTimeout * 1000),
            CURLOPT_TIMEOUT_MS => (int) ceil($this->timeout * 1000),
            CURLOPT_NOSIGNAL => true,
            CURLOPT_SSL_VERIFYPEER => true,
            CURLOPT_SSL_VERIFYHOST => 2,
            CURLOPT_PROTOCOLS => CURLPROTO_HTTP | CURLPROTO_HTTPS,
            CURLOPT_HEADERFUNCTION => function ($ch, $line) use (&$responseHeaders) {
                self::collectHeaderLine($responseHeaders, $line);
                return strlen($line);
            },
            CURLOPT_WRITEFUNCTION => function ($ch, $chunk) use (&$responseBody, &$tooLarge) {
                if (strlen($responseBody) + strlen($chunk) > self::MAX_BODY_BYTES) {
                    $tooLarge = true;
                    return 0; // aborts the transfer
                }
                $responseBody .= $chunk;
                return strlen($chunk);
            },
        );
        if ($this->caFile !== null) {
            $options[CURLOPT_CAINFO] = $this->caFile;
        }
        curl_setopt_array($ch, $options);
        curl_exec($ch);
        $errno = curl_errno($ch);
        $error = curl_error($ch);
        $status = (int) curl_getinfo($ch, CURLINFO_RESPONSE_CODE);
        if (PHP_VERSION_ID < 80000) {
            curl_close($ch); // a no-op (and deprecated) from PHP 8 on
        }
        if ($tooLarge) {
            return self::transportError('bad_response', 'answer larger than ' . self::MAX_BODY_BYTES . ' bytes');
        }
        if ($errno !== 0) {
            return self::transportError($errno === 28 ? 'timeout' : 'connect_failed', 'curl error ' . $errno . ': ' . $error);
        }
        return array('error' => null, 'detail' => '', 'status' => $status, 'headers' => $responseHeaders, 'body' => $responseBody);
    }

    /** Fallback without ext-curl. The stream wrapper has one timeout for connect and reads. */
    private function postWithStream(string $url, string $body, array $headers): array
    {
        $start = microtime(true);
        $deadline = $start + $this->timeout;
        $context = stream_context_create(array(
            'http' => array(
                'method' => 'POST',
                'header' => implode("\r\n", array_merge($headers, array('Connection: close'))),
                'content' => $body,
                'timeout' => $this->timeout,
                'ignore_errors' => true,
                'follow_location' => 0,
                'max_redirects' => 1,
            ),
            'ssl' => array_filter(array(
                'verify_peer' => true,
                'verify_peer_name' => true,
                'cafile' => $this->caFile,
            ), function ($v) {
                return $v !== null;
            }),
        ));
        $fp = @fopen($url, 'rb', false, $context);
        if ($fp === false) {
            $timedOut = microtime(true) - $start >= $this->timeout - 0.05;
            return self::transportError($timedOut ? 'timeout' : 'connect_failed', 'could not open ' . $url);
        }
        $meta = stream_get_meta_data($fp);
        $responseHeaders = array();
        foreach ((array) ($meta['wrapper_data'] ?? array()) as $line) {
            if (is_string($line)) {
                self::collectHeaderLine($responseHeaders, $line);
            }
        }
        $responseBody = '';
        while (!feof($fp)) {
            $remaining = $deadline - microtime(true);
            if ($remaining <= 0) {
                fclose($fp);
                return self::transportError('timeout', 'reading the answer took too long');
            }
            stream_set_timeout($fp, (int) $remaining, (int) (($remaining - (int) $remaining) * 1000000));
            $chunk = fread($fp, 8192);
            $info = stream_get_meta_data($fp);
            if ($chunk === false || $info['timed_out']) {
                fclose($fp);
                return self::transportError('timeout', 'reading the answer took too long');
            }
            $responseBody .= $chunk;
            if (strlen($responseBody) > self::MAX_BODY_BYTES) {
                fclose($fp);
                return self::transportError('bad_response', 'answer larger than ' . self::MAX_BODY_BYTES . ' bytes');
            }
        }
        fclose($fp);
        $status = isset($responseHeaders[':status'][0]) ? (int) $responseHeaders[':status'][0] : 0;
        unset($responseHeaders[':status']);
        return array('error' => null, 'detail' => '', 'status' => $status, 'headers' => $responseHeaders, 'body' => $responseBody);
    }

    /** Header lines into name => values; a new status line (100 Continue, redirects) starts over. */
    private static function collectHeaderLine(array &$headers, string $line): void
    {
        $line = rtrim($line, "\r\n");
        if (preg_match('#^HTTP/\S+\s+(\d{3})#', $line, $m)) {
            $headers = array(':status' => array($m[1]));
            return;
        }
        $colon = strpos($line, ':');
        if ($colon === false || $colon === 0) {
            return;
        }
        $name = strtolower(trim(substr($line, 0, $colon)));
        $headers[$name][] = trim(substr($line, $colon + 1));
    }

    private static function transportError(string $error, string $detail): array
    {
        return array('error' => $error, 'detail' => $detail, 'status' => 0, 'headers' => array(), 'body' => '');
    }

    // ------------------------------------------------------------------ small helpers

    private function now(): int
    {
        if ($this->now === null) {
            return time();
        }
        return (int) (is_numeric($this->now) ? $this->now : call_user_func($this->now));
    }

    private function serverIp(): string
    {
        if ($this->ipOption !== null) {
            return $this->ipOption;
        }
        return isset($this->server['SERVER_ADDR']) && is_string($this->server['SERVER_ADDR']) ? $this->server['SERVER_ADDR'] : '';
    }

    private function result(string $status, string $reason, bool $fromCache, ?array $license): LicenseServer_Result
    {
        $message = self::describe($reason);
        if ($reason === 'stale_response') {
            $message .= ' (more than ' . $this->maxClockSkew . ' seconds)';
        }
        return new LicenseServer_Result($status, $reason, $fromCache, $license, $message);
    }

    private function log(string $message): void
    {
        if ($this->logger !== null) {
            try {
                call_user_func($this->logger, '[license] ' . $message);
            } catch (Throwable $e) {
                // logging must never break the check
            }
        }
    }

    /** Human-readable text for a reason code. */
    public static function describe(string $reason): string
    {
        static $texts = array(
            'ok' => 'The license is active.',
            'activated' => 'The license has been activated for this installation.',
            'dev_host' => 'The license is active (development host).',
            'unknown_key' => 'The license key is not recognised.',
            'bad_signature' => 'The license key is not valid.',
            'domain_not_allowed' => 'The license is not valid for this domain.',
            'ip_not_allowed' => 'The license is not valid for this server\'s IP address.',
            'directory_not_allowed' => 'The license is not valid for this installation directory.',
            'seat_limit' => 'The license is already used on its maximum number of installations.',
            'product_mismatch' => 'The license is for a different product.',
            'expired' => 'The license has expired.',
            'suspended' => 'The license is suspended.',
            'revoked' => 'The license has been revoked.',
            'no_license_key' => 'No license key has been entered.',
            'no_domain' => 'The domain of this installation is unknown; configure it so the license can be checked.',
            'tampered' => 'The license server\'s answer failed its signature check (missing, malformed or wrong), so it was ignored.',
            'unknown_key_id' => 'The license server\'s answer is signed with a key this module does not know, so it was ignored.',
            'bad_nonce' => 'The license server\'s answer does not belong to this request (a replay), so it was ignored.',
            'stale_response' => 'The license server\'s answer is not fresh (its clock and this server\'s clock disagree; check the system time), so it was ignored.',
            'bad_local_key' => 'The local license key sent by the server is not valid for this installation.',
            'connect_failed' => 'The license server could not be reached.',
            'timeout' => 'The license server did not answer in time.',
            'server_error' => 'The license server reported an internal error.',
            'request_rejected' => 'The license server rejected the request.',
            'rate_limited' => 'The license server asked us to slow down.',
            'bad_response' => 'The license server sent an unusable answer.',
            'no_transport' => 'This PHP installation can make no outgoing HTTP requests.',
            'internal_error' => 'The license check failed unexpectedly.',
        );
        return $texts[$reason] ?? ('License check result: ' . $reason . '.');
    }

    /** A JSON unix time as int; floats are tolerated (a server using time.time()), nothing else. */
    private static function unixTime($value): ?int
    {
        if (is_int($value)) {
            return $value;
        }
        return is_float($value) && is_finite($value) ? (int) floor($value) : null;
    }

    private static function date(int $timestamp): string
    {
        return gmdate('Y-m-d H:i', $timestamp) . ' UTC';
    }

    /** 32 url-safe base64 characters from 24 random bytes. */
    private static function newNonce(): string
    {
        return self::b64urlEncode(random_bytes(24));
    }

    /** Decoded JSON object (as an array), or null for anything else, including JSON arrays. */
    private static function jsonObject(?string $json): ?array
    {
        if ($json === null || !preg_match('/^\s*\{/', $json)) {
            return null;
        }
        $value = json_decode($json, true, 64);
        return is_array($value) ? $value : null;
    }

    /** @internal */
    public static function b64urlEncode(string $bytes): string
    {
        return rtrim(strtr(base64_encode($bytes), '+/', '-_'), '=');
    }

    /** @internal strict: url-safe alphabet, padding optional, null on anything else */
    public static function b64urlDecode(string $text): ?string
    {
        $text = rtrim($text, '=');
        if (!preg_match('/^[A-Za-z0-9_-]*$/', $text) || strlen($text) % 4 === 1) {
            return null;
        }
        $bytes = base64_decode(strtr($text, '-_', '+/'), true);
        return is_string($bytes) ? $bytes : null;
    }

    private static function stringOption(array $options, string $name, string $default): string
    {
        if (!isset($options[$name])) {
            return $default;
        }
        if (!is_string($options[$name])) {
            throw new InvalidArgumentException($name . ' must be a string');
        }
        return $options[$name];
    }

    private static function intOption(array $options, string $name, int $default, int $min): int
    {
        if (!isset($options[$name])) {
            return $default;
        }
        if (!is_int($options[$name]) && !(is_string($options[$name]) && preg_match('/^[0-9]+$/', $options[$name]))) {
            throw new InvalidArgumentException($name . ' must be an integer number of seconds');
        }
        return max($min, (int) $options[$name]);
    }

    private static function floatOption(array $options, string $name, float $default): float
    {
        if (!isset($options[$name])) {
            return $default;
        }
        if (!is_numeric($options[$name]) || (float) $options[$name] <= 0) {
            throw new InvalidArgumentException($name . ' must be a positive number of seconds');
        }
        return (float) $options[$name];
    }

    // ------------------------------------------------------------------ IDN

    /**
     * UTS #46 ToASCII with UseSTD3ASCIIRules and the IDNA2008 checks of RFC 5891/5892/5893, as
     * the server's Python "idna" package applies them; '' when the name is refused.
     *
     * The built-in implementation knows the characters of a fixed repertoire: ASCII, Latin-1
     * and Latin Extended-A letters (and ʼ), Greek, Cyrillic (U+0400-045F), Hiragana, Katakana, CJK
     * Unified Ideographs, Hangul syllables, full-width ASCII letters and digits, the Unicode
     * full stops, and the characters UTS #46 ignores (soft hyphen, zero-width space, ...).
     * Within it the result equals the server's (the parity test checks every character).
     * A name with any other character is refused by it, never mapped to a different name; on
     * such a name ext-intl, when loaded, gets a second opinion (the server still decides).
     */
    private static function idnToAscii(string $name): string
    {
        $ascii = self::builtinToAscii($name);
        if ($ascii === null && function_exists('idn_to_ascii')) {
            $flags = IDNA_NONTRANSITIONAL_TO_ASCII | IDNA_USE_STD3_RULES | IDNA_CHECK_BIDI | IDNA_CHECK_CONTEXTJ;
            $intl = idn_to_ascii($name, $flags, INTL_IDNA_VARIANT_UTS46);
            return is_string($intl) ? strtolower($intl) : '';
        }
        return $ascii === null ? '' : $ascii;
    }

    /** @return string|null the A-label name, '' when refused, null for a character outside the repertoire */
    private static function builtinToAscii(string $name): ?string
    {
        $points = array();
        foreach (self::codePoints($name) as $cp) {
            if ($cp < 0x80) {
                // UseSTD3ASCIIRules: only lowercase letters, digits, hyphen and the dot.
                if (!preg_match('/^[a-z0-9.-]$/', chr($cp))) {
                    return '';
                }
                $points[] = $cp;
                continue;
            }
            $mapped = self::idnaMap($cp);
            if ($mapped === null) {
                return null;
            }
            foreach ($mapped as $m) {
                $points[] = $m;
            }
        }
        if (count($points) > 254) {
            return '';
        }
        $labels = array(array());
        foreach ($points as $cp) {
            if ($cp === 0x2E) {
                $labels[] = array();
            } else {
                $labels[count($labels) - 1][] = $cp;
            }
        }
        $trailingDot = false;
        if (count($labels) > 1 && end($labels) === array()) {
            array_pop($labels);
            $trailingDot = true;
        }
        $out = array();
        foreach ($labels as $label) {
            $encoded = self::labelToAscii($label);
            if ($encoded === null || $encoded === '') {
                return $encoded;
            }
            $out[] = $encoded;
        }
        $result = implode('.', $out) . ($trailingDot ? '.' : '');
        return strlen($result) > ($trailingDot ? 254 : 253) ? '' : $result;
    }

    /** One label to its A-label; '' when refused, null for a character outside the repertoire. */
    private static function labelToAscii(array $label): ?string
    {
        $isAscii = true;
        foreach ($label as $cp) {
            $isAscii = $isAscii && $cp < 0x80;
        }
        if (!$isAscii) {
            $valid = self::labelValid($label);
            if ($valid !== true) {
                return $valid;
            }
            $encoded = 'xn--' . self::punycode($label);
            return strlen($encoded) <= 63 ? $encoded : '';
        }
        $text = implode('', array_map('chr', $label));
        if (strncmp($text, 'xn--', 4) === 0) {
            // An A-label must be the canonical encoding of a valid U-label (RFC 5891 5.3).
            $rest = substr($text, 4);
            $decoded = $rest === '' || substr($rest, -1) === '-' ? null : self::punycodeDecode($rest);
            if ($decoded === null || self::punycode($decoded) !== $rest) {
                return '';
            }
            $valid = self::labelValid($decoded);
            if ($valid !== true) {
                return $valid;
            }
        } else {
            $valid = self::labelValid($label);
            if ($valid !== true) {
                return $valid;
            }
        }
        return strlen($text) <= 63 ? $text : '';
    }

    /**
     * IDNA2008 validity of a U-label (RFC 5891 4.2, RFC 5892): hyphens, no leading
     * combining mark, every character PVALID or valid in its context.
     *
     * @return bool|string|null true, '' when refused, null for a character outside the repertoire
     */
    private static function labelValid(array $label)
    {
        $n = count($label);
        if ($n === 0 || ($n >= 4 && $label[2] === 0x2D && $label[3] === 0x2D)
            || $label[0] === 0x2D || $label[$n - 1] === 0x2D || $label[0] === 0x307) {
            return '';
        }
        foreach ($label as $i => $cp) {
            if ($cp === 0xB7) { // MIDDLE DOT: only between two "l" (RFC 5892 A.3)
                if ($i === 0 || $i === $n - 1 || $label[$i - 1] !== 0x6C || $label[$i + 1] !== 0x6C) {
                    return '';
                }
            } elseif ($cp === 0x200C || $cp === 0x200D) {
                return ''; // joiners need a virama before them (A.1, A.2): none in the repertoire
            } elseif ($cp === 0x307) {
                if ($label[$i - 1] !== 0x69) {
                    return null; // would compose under NFC: outside what we can check
                }
            } elseif (!self::pvalid($cp)) {
                return $cp < 0x80 ? '' : null;
            }
        }
        return true;
    }

    /** PVALID code points of the repertoire (lowercase letters, digits, hyphen, scripts without case). */
    private static function pvalid(int $cp): bool
    {
        if ($cp < 0x80) {
            return ($cp >= 0x61 && $cp <= 0x7A) || ($cp >= 0x30 && $cp <= 0x39) || $cp === 0x2D;
        }
        return ($cp >= 0xDF && $cp <= 0xFF && $cp !== 0xF7)
            || ($cp >= 0x100 && $cp <= 0x17F && self::latinExtendedALower($cp))
            || $cp === 0x2BC || $cp === 0x390 || ($cp >= 0x3AC && $cp <= 0x3CE)
            || ($cp >= 0x430 && $cp <= 0x45F)
            || ($cp >= 0x3041 && $cp <= 0x3096) || ($cp >= 0x30A1 && $cp <= 0x30FA) || $cp === 0x30FC
            || ($cp >= 0x4E00 && $cp <= 0x9FFF) || ($cp >= 0xAC00 && $cp <= 0xD7A3);
    }

    /** Is a Latin Extended-A code point a lowercase letter that maps to itself? */
    private static function latinExtendedALower(int $cp): bool
    {
        if (in_array($cp, array(0x131, 0x138), true)) {
            return true;
        }
        if (in_array($cp, array(0x130, 0x132, 0x133, 0x13F, 0x140, 0x149, 0x17F), true)) {
            return false;
        }
        // Pairs: uppercase even / lowercase odd, except 0139-0148 and 0179-017E (odd / even).
        $oddUpper = ($cp >= 0x139 && $cp <= 0x148) || ($cp >= 0x179 && $cp <= 0x17E);
        return $oddUpper ? $cp % 2 === 0 : $cp % 2 === 1;
    }

    /**
     * UTS #46 mapping of one non-ASCII code point (after Python's lower()), for the repertoire.
     *
     * @return int[]|null the replacement (empty when ignored), null outside the repertoire
     */
    private static function idnaMap(int $cp): ?array
    {
        static $single = array(
            0x3002 => 0x2E, 0xFF0E => 0x2E, 0xFF61 => 0x2E, 0xFF0D => 0x2D, // full stops, hyphen
            0x1E9E => 0xDF, 0x17F => 0x73, 0x178 => 0xFF,                    // ẞ → ß, ſ → s, Ÿ → ÿ
            0x386 => 0x3AC, 0x388 => 0x3AD, 0x389 => 0x3AE, 0x38A => 0x3AF, 0x38C => 0x3CC, 0x38E => 0x3CD, 0x38F => 0x3CE,
        );
        if (isset($single[$cp])) {
            return array($single[$cp]);
        }
        if ($cp === 0xAD || $cp === 0x200B || $cp === 0x2060 || $cp === 0xFEFF || ($cp >= 0xFE00 && $cp <= 0xFE0F)) {
            return array(); // ignored by UTS #46
        }
        if ($cp === 0x130) {
            return array(0x69, 0x307); // İ → i̇ (Python's lower(), kept by UTS #46)
        }
        if ($cp === 0x132 || $cp === 0x133) {
            return array(0x69, 0x6A); // Ĳ ĳ → ij
        }
        if ($cp === 0x13F || $cp === 0x140) {
            return array(0x6C, 0xB7); // Ŀ ŀ → l·
        }
        if ($cp === 0x149) {
            return array(0x2BC, 0x6E); // ŉ → ʼn
        }
        if (($cp >= 0xFF10 && $cp <= 0xFF19) || ($cp >= 0xFF41 && $cp <= 0xFF5A)) {
            return array($cp - 0xFEE0); // full-width digits and small letters
        }
        if ($cp >= 0xFF21 && $cp <= 0xFF3A) {
            return array($cp - 0xFEE0 + 0x20); // full-width capitals
        }
        if (($cp >= 0xC0 && $cp <= 0xDE && $cp !== 0xD7) || ($cp >= 0x391 && $cp <= 0x3AB && $cp !== 0x3A2)
            || ($cp >= 0x410 && $cp <= 0x42F)) {
            return array($cp + 32);
        }
        if ($cp >= 0x400 && $cp <= 0x40F) {
            return array($cp + 80);
        }
        if ($cp >= 0x100 && $cp <= 0x17F && !self::latinExtendedALower($cp)) {
            return array($cp + 1);
        }
        if ($cp === 0xB7 || $cp === 0x200C || $cp === 0x200D || $cp === 0x307 || self::pvalid($cp)) {
            return array($cp); // valid or deviation: kept (contexts are checked per label)
        }
        return null;
    }

    /**
     * Python's str.lower() where it differs from a per-character mapping: a capital sigma is
     * final (ς) after a cased letter and not before one, skipping case-ignorable characters
     * (Unicode 3.13, Final_Sigma). Other characters are mapped later by idnaMap().
     */
    private static function pythonLower(string $text): string
    {
        $text = strtr($text, 'ABCDEFGHIJKLMNOPQRSTUVWXYZ', 'abcdefghijklmnopqrstuvwxyz');
        if (strpos($text, "\xCE\xA3") === false) {
            return $text;
        }
        $points = self::codePoints($text);
        $n = count($points);
        $out = '';
        foreach ($points as $i => $cp) {
            if ($cp === 0x3A3) {
                $j = $i - 1;
                while ($j >= 0 && self::caseIgnorable($points[$j])) {
                    $j--;
                }
                $final = $j >= 0 && self::cased($points[$j]);
                $j = $i + 1;
                while ($final && $j < $n && self::caseIgnorable($points[$j])) {
                    $j++;
                }
                $cp = $final && ($j >= $n || !self::cased($points[$j])) ? 0x3C2 : 0x3C3;
            }
            $out .= self::utf8($cp);
        }
        return $out;
    }

    /** Unicode Cased, for ASCII and the repertoire (other characters are refused anyway). */
    private static function cased(int $cp): bool
    {
        return ($cp >= 0x41 && $cp <= 0x5A) || ($cp >= 0x61 && $cp <= 0x7A) || $cp === 0xAA || $cp === 0xB5 || $cp === 0xBA
            || ($cp >= 0xC0 && $cp <= 0x24F && $cp !== 0xD7 && $cp !== 0xF7)
            || ($cp >= 0x386 && $cp <= 0x3FF && $cp !== 0x387) || ($cp >= 0x400 && $cp <= 0x4FF)
            || $cp === 0x1E9E || ($cp >= 0xFF21 && $cp <= 0xFF3A) || ($cp >= 0xFF41 && $cp <= 0xFF5A);
    }

    /** Unicode Case_Ignorable, for ASCII and the repertoire. */
    private static function caseIgnorable(int $cp): bool
    {
        static $set = array(0x27, 0x2E, 0x3A, 0x5E, 0x60, 0xA8, 0xAD, 0xAF, 0xB4, 0xB7, 0xB8, 0x2BC, 0x200B, 0x200C, 0x200D,
            0x2060, 0xFEFF, 0x30FC, 0xFF07, 0xFF0E, 0xFF1A, 0xFF3E, 0xFF40);
        return in_array($cp, $set, true) || ($cp >= 0x300 && $cp <= 0x36F) || ($cp >= 0xFE00 && $cp <= 0xFE0F);
    }

    /** RFC 3492 decoding with Python's rules; null when the input is not valid punycode. */
    private static function punycodeDecode(string $input): ?array
    {
        $dash = strrpos($input, '-');
        $output = array();
        if ($dash !== false) {
            foreach (str_split(substr($input, 0, $dash)) as $char) {
                $output[] = ord($char);
            }
        }
        $extended = $dash === false ? $input : substr($input, $dash + 1);
        $n = 128;
        $i = -1;
        $bias = 72;
        $pos = 0;
        $length = strlen($extended);
        $first = true;
        while ($pos < $length) {
            $delta = 0;
            $w = 1;
            for ($k = 36; ; $k += 36) {
                if ($pos >= $length) {
                    return null;
                }
                $c = ord($extended[$pos++]);
                if ($c >= 0x61 && $c <= 0x7A) {
                    $digit = $c - 0x61;
                } elseif ($c >= 0x30 && $c <= 0x39) {
                    $digit = $c - 22;
                } else {
                    return null;
                }
                $t = $k <= $bias ? 1 : ($k >= $bias + 26 ? 26 : $k - $bias);
                $delta += $digit * $w;
                if ($delta > 0x7FFFFFFF) {
                    return null;
                }
                if ($digit < $t) {
                    break;
                }
                $w *= 36 - $t;
            }
            $i += $delta + 1;
            $n += intdiv($i, count($output) + 1);
            if ($n > 0x10FFFF) {
                return null;
            }
            $i %= count($output) + 1;
            array_splice($output, $i, 0, array($n));
            $bias = self::punycodeAdapt($delta, count($output), $first);
            $first = false;
        }
        return $output;
    }

    /** UTF-8 bytes of one code point (ext-mbstring is optional). */
    private static function utf8(int $cp): string
    {
        if ($cp < 0x80) {
            return chr($cp);
        }
        if ($cp < 0x800) {
            return chr(0xC0 | ($cp >> 6)) . chr(0x80 | ($cp & 0x3F));
        }
        if ($cp < 0x10000) {
            return chr(0xE0 | ($cp >> 12)) . chr(0x80 | (($cp >> 6) & 0x3F)) . chr(0x80 | ($cp & 0x3F));
        }
        return chr(0xF0 | ($cp >> 18)) . chr(0x80 | (($cp >> 12) & 0x3F)) . chr(0x80 | (($cp >> 6) & 0x3F)) . chr(0x80 | ($cp & 0x3F));
    }

    /** @return int[] code points of a valid UTF-8 string */
    private static function codePoints(string $text): array
    {
        $points = array();
        foreach (preg_split('//u', $text, -1, PREG_SPLIT_NO_EMPTY) as $char) {
            $bytes = array_values(unpack('C*', $char));
            $n = count($bytes);
            $cp = $n === 1 ? $bytes[0] : ($bytes[0] & (0xFF >> ($n + 1)));
            for ($i = 1; $i < $n; $i++) {
                $cp = ($cp << 6) | ($bytes[$i] & 0x3F);
            }
            $points[] = $cp;
        }
        return $points;
    }

    /** RFC 3492 punycode encoding of one label's code points. */
    private static function punycode(array $input): string
    {
        $base = 36;
        $tMin = 1;
        $tMax = 26;
        $output = '';
        foreach ($input as $cp) {
            if ($cp < 0x80) {
                $output .= chr($cp);
            }
        }
        $basic = strlen($output);
        $handled = $basic;
        if ($basic > 0) {
            $output .= '-';
        }
        $n = 128;
        $delta = 0;
        $bias = 72;
        $length = count($input);
        while ($handled < $length) {
            $m = PHP_INT_MAX;
            foreach ($input as $cp) {
                if ($cp >= $n && $cp < $m) {
                    $m = $cp;
                }
            }
            $delta += ($m - $n) * ($handled + 1);
            $n = $m;
            foreach ($input as $cp) {
                if ($cp < $n) {
                    $delta++;
                }
                if ($cp === $n) {
                    $q = $delta;
                    for ($k = $base; ; $k += $base) {
                        $t = $k <= $bias ? $tMin : ($k >= $bias + $tMax ? $tMax : $k - $bias);
                        if ($q < $t) {
                            break;
                        }
                        $output .= self::punycodeDigit($t + ($q - $t) % ($base - $t));
                        $q = intdiv($q - $t, $base - $t);
                    }
                    $output .= self::punycodeDigit($q);
                    $bias = self::punycodeAdapt($delta, $handled + 1, $handled === $basic);
                    $delta = 0;
                    $handled++;
                }
            }
            $delta++;
            $n++;
        }
        return $output;
    }

    private static function punycodeDigit(int $d): string
    {
        return chr($d < 26 ? $d + 97 : $d + 22);
    }

    private static function punycodeAdapt(int $delta, int $points, bool $first): int
    {
        $delta = $first ? intdiv($delta, 700) : intdiv($delta, 2);
        $delta += intdiv($delta, $points);
        $k = 0;
        while ($delta > 455) { // ((36 - 1) * 26) / 2
            $delta = intdiv($delta, 35);
            $k += 36;
        }
        return $k + intdiv(36 * $delta, $delta + 38);
    }
}

/**
 * Signature check for the WHMCS-compatible endpoint /modules/servers/licensing/verify.php.
 *
 * That endpoint answers `<tag>value</tag>` lines joined with "\n"; its last line is
 * `<licensesignature>KID.SIG</licensesignature>`, SIG being base64url (no padding) of an
 * Ed25519 signature over "whmcs-compat-v1\n" . $checkToken . "\n" . <all bytes before that
 * last line>. Binding the caller's fresh check token into the signature is what stops a
 * replayed or forged "Active" answer.
 */
final class LicenseServer_CompatSignature
{
    /**
     * @param string $rawBody     the exact response body
     * @param string $checkToken  the check_token you sent with this request (must be fresh, non-empty)
     * @param array  $publicKeys  kid => base64url Ed25519 public key, as for LicenseServer_Client
     */
    public static function verify(string $rawBody, string $checkToken, array $publicKeys): bool
    {
        if ($checkToken === '') {
            return false; // without a token any old signed answer could be replayed
        }
        $lineStart = strrpos($rawBody, "\n");
        $lineStart = $lineStart === false ? 0 : $lineStart + 1;
        $signed = substr($rawBody, 0, $lineStart);
        $lastLine = substr($rawBody, $lineStart);
        if (!preg_match('#^<licensesignature>([^<>\s]+)\.([A-Za-z0-9_-]{86})</licensesignature>$#', $lastLine, $m)
            || strpos($signed, '<licensesignature>') !== false) {
            return false;
        }
        $kid = $m[1];
        if (!isset($publicKeys[$kid]) || !is_string($publicKeys[$kid])) {
            return false;
        }
        $publicKey = LicenseServer_Client::b64urlDecode($publicKeys[$kid]);
        $signature = LicenseServer_Client::b64urlDecode($m[2]);
        if ($publicKey === null || $signature === null) {
            return false;
        }
        $message = LicenseServer_Client::COMPAT_CONTEXT . $checkToken . "\n" . $signed;
        return LicenseServer_Client::ed25519Verify($signature, $message, $publicKey);
    }

    /**
     * The `<tag>value</tag>` fields of a compat answer as tag => value. Call only after
     * verify() returned true; values are returned as sent (no HTML decoding).
     */
    public static function fields(string $rawBody): array
    {
        $fields = array();
        foreach (explode("\n", $rawBody) as $line) {
            if (preg_match('#^<([a-z0-9_]+)>(.*)</\1>$#s', $line, $m)) {
                $fields[$m[1]] = $m[2];
            }
        }
        return $fields;
    }
}

}
