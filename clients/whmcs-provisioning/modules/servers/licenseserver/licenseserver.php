<?php
/**
 * License Server — WHMCS provisioning (server) module.
 *
 * Lets the vendor's own WHMCS issue and manage licenses on the self-hosted license server
 * through its vendor API (/api/v1): an order that is paid issues a license, and suspending,
 * unsuspending, terminating, upgrading and renewing the service do the same to the license.
 *
 * Install: copy the `modules` directory of this package into the WHMCS root. The WHMCS server's
 * Hostname is the license server's base URL (https://licenses.example.com; a bare host name
 * means https), its Password (or Access Hash) an API key of the license server with the
 * scopes license:create, license:read, license:update, license:suspend, license:revoke and
 * license:reissue. The product needs the custom fields "License Key" and "License ID".
 *
 * Safety rules this file keeps:
 * - every request is HTTPS with certificate and host name verification (plain http only to
 *   127.0.0.1 / localhost / ::1), bounded connect and total timeouts, no redirects followed;
 * - every write carries an Idempotency-Key derived from the WHMCS service id, the action and the
 *   license's state, so a retried cron run or a double click never acts twice: a retried
 *   CreateAccount gets the license that the first attempt created, never a second one;
 * - nothing is ever fatal: each entry point returns "success" or a message, as WHMCS expects;
 * - the API key never appears in a message, in the module log (logModuleCall is also given it
 *   as a value to hide) or in the client area; license keys are masked in the module log;
 * - every value shown in the client area is escaped with htmlspecialchars();
 * - no unserialize(), no eval, no composer: PHP 7.4+ with ext-curl and ext-json.
 *
 * @version 1.0.0
 */

if (!defined('WHMCS')) {
    die('This file cannot be accessed directly');
}

if (!class_exists('LicenseServerWhmcs_Error', false)) {

/** A refusal or failure whose message is safe to show to a WHMCS administrator. */
final class LicenseServerWhmcs_Error extends Exception
{
}

/** One answer of the license server. */
final class LicenseServerWhmcs_Response
{
    /** @var int HTTP status */
    public $status;
    /** @var array|null the JSON body, when it was a JSON object */
    public $json;
    /** @var bool true when the server replayed the answer to an earlier identical request */
    public $replayed;

    public function __construct(int $status, ?array $json, bool $replayed)
    {
        $this->status = $status;
        $this->json = $json;
        $this->replayed = $replayed;
    }
}

/** The vendor API over curl, with the module log and secret scrubbing. */
final class LicenseServerWhmcs_Api
{
    const MODULE = 'licenseserver';
    const CONNECT_TIMEOUT = 5;
    const TIMEOUT = 20;
    const MAX_ANSWER_BYTES = 1048576;
    const LOOPBACK_HOSTS = ['127.0.0.1', 'localhost', '::1'];

    /** @var string[] values that must never be shown or logged (the API keys in use) */
    private static $secrets = [];

    /** @var string */
    private $baseUrl;
    /** @var string */
    private $apiKey;
    /** @var string the WHMCS action, for the module log */
    private $action;

    public function __construct(string $baseUrl, string $apiKey, string $action)
    {
        $this->baseUrl = $baseUrl;
        $this->apiKey = $apiKey;
        $this->action = $action;
        self::$secrets[] = $apiKey;
    }

    /** The API of the WHMCS server that the service is on. */
    public static function fromParams(array $params, string $action): self
    {
        $key = trim((string) ($params['serverpassword'] ?? ''));
        if ($key === '') {
            $key = trim((string) ($params['serveraccesshash'] ?? ''));
        }
        if ($key === '') {
            throw new LicenseServerWhmcs_Error(
                'No API key: put a license server API key in the server\'s Password (or Access Hash) field.'
            );
        }
        self::$secrets[] = $key;
        if (preg_match('/[^\x21-\x7e]/', $key)) {
            throw new LicenseServerWhmcs_Error(
                'The API key in the server\'s settings contains spaces or other invisible characters; paste it again.'
            );
        }
        return new self(self::baseUrl($params), $key, $action);
    }

    /**
     * The license server's base URL from the WHMCS server's Hostname: a full URL (with a path
     * if the server is mounted under one) or a bare host name, which means https.
     */
    public static function baseUrl(array $params): string
    {
        $given = trim((string) ($params['serverhostname'] ?? ''));
        if ($given === '') {
            $given = trim((string) ($params['serverip'] ?? ''));
        }
        if ($given === '') {
            throw new LicenseServerWhmcs_Error(
                'No license server URL: set the server\'s Hostname to the license server\'s base URL, e.g. https://licenses.example.com'
            );
        }
        if (strpos($given, '://') === false) {
            $given = 'https://' . $given;
        }
        $parts = parse_url($given);
        if (!is_array($parts) || !isset($parts['scheme'], $parts['host']) || $parts['host'] === '') {
            throw new LicenseServerWhmcs_Error('The server\'s Hostname is not a URL, e.g. https://licenses.example.com');
        }
        if (isset($parts['user']) || isset($parts['pass']) || isset($parts['query']) || isset($parts['fragment'])) {
            throw new LicenseServerWhmcs_Error(
                'The license server URL must not contain a user name, password, query or fragment; put the API key in the Password field.'
            );
        }
        $scheme = strtolower($parts['scheme']);
        $host = strtolower(trim($parts['host'], '[]'));
        $loopback = in_array($host, self::LOOPBACK_HOSTS, true);
        if ($scheme !== 'https' && !($scheme === 'http' && $loopback)) {
            throw new LicenseServerWhmcs_Error(
                'The license server URL must start with https:// (plain http:// only for 127.0.0.1 or localhost).'
            );
        }
        $port = isset($parts['port']) ? ':' . (int) $parts['port'] : '';
        return $scheme . '://' . $parts['host'] . $port . rtrim($parts['path'] ?? '', '/');
    }

    /** `$text` with every secret in use replaced. */
    public static function scrub(string $text): string
    {
        foreach (self::$secrets as $secret) {
            if ($secret !== '') {
                $text = str_replace($secret, '***', $text);
            }
        }
        return $text;
    }

    /** A license key as it may be logged or shown masked: its first group and last 4 characters. */
    public static function maskKey(string $key): string
    {
        if (strlen($key) <= 8) {
            return str_repeat('*', strlen($key));
        }
        $dash = strpos($key, '-');
        $head = ($dash !== false && $dash <= 16) ? substr($key, 0, $dash + 1) : substr($key, 0, 2);
        return $head . '****' . substr($key, -4);
    }

    /**
     * One request. `$body` null sends no body; `$logPath` replaces the path in the module log
     * (when the path carries a license key). Throws LicenseServerWhmcs_Error when the server
     * cannot be reached or does not answer JSON; any HTTP status is returned.
     */
    public function request(
        string $method,
        string $path,
        ?array $body = null,
        string $idempotencyKey = '',
        string $logPath = ''
    ): LicenseServerWhmcs_Response {
        if (!function_exists('curl_init')) {
            throw new LicenseServerWhmcs_Error('PHP\'s curl extension is not installed; the module needs it.');
        }
        $payload = '';
        if ($body !== null) {
            $payload = json_encode($body, JSON_UNESCAPED_SLASHES | JSON_UNESCAPED_UNICODE);
            if ($payload === false) {
                throw new LicenseServerWhmcs_Error('Could not encode the request (invalid UTF-8 in the client\'s details?).');
            }
        }
        $headers = [
            'Accept: application/json',
            'Authorization: Bearer ' . $this->apiKey,
            'User-Agent: licenseserver-whmcs/1.0',
            'Expect:',
        ];
        if ($body !== null) {
            $headers[] = 'Content-Type: application/json';
        }
        if ($idempotencyKey !== '') {
            $headers[] = 'Idempotency-Key: ' . $idempotencyKey;
        }
        $replayed = false;
        $raw = '';
        $tooLarge = false;
        $curl = curl_init();
        curl_setopt_array($curl, [
            CURLOPT_URL => $this->baseUrl . $path,
            CURLOPT_CUSTOMREQUEST => $method,
            CURLOPT_HTTPHEADER => $headers,
            CURLOPT_CONNECTTIMEOUT => self::CONNECT_TIMEOUT,
            CURLOPT_TIMEOUT => self::TIMEOUT,
            CURLOPT_SSL_VERIFYPEER => true,
            CURLOPT_SSL_VERIFYHOST => 2,
            CURLOPT_FOLLOWLOCATION => false,
            CURLOPT_PROTOCOLS => CURLPROTO_HTTPS | CURLPROTO_HTTP,
            CURLOPT_HEADERFUNCTION => function ($handle, $line) use (&$replayed) {
                if (preg_match('/^Idempotent-Replayed:\s*true\s*$/i', $line)) {
                    $replayed = true;
                }
                return strlen($line);
            },
            CURLOPT_WRITEFUNCTION => function ($handle, $chunk) use (&$raw, &$tooLarge) {
                if (strlen($raw) + strlen($chunk) > self::MAX_ANSWER_BYTES) {
                    $tooLarge = true;
                    return 0; // aborts the transfer
                }
                $raw .= $chunk;
                return strlen($chunk);
            },
        ]);
        if ($body !== null || $method !== 'GET') {
            curl_setopt($curl, CURLOPT_POSTFIELDS, $payload);
        }
        $ok = curl_exec($curl);
        $error = curl_error($curl);
        $status = (int) curl_getinfo($curl, CURLINFO_RESPONSE_CODE);
        curl_close($curl);

        $json = json_decode($raw, true);
        $json = is_array($json) ? $json : null;
        $this->log($method, $logPath !== '' ? $logPath : $path, $payload, $idempotencyKey, $ok === false ? 'curl: ' . $error : $status . ' ' . $raw, $json);
        if ($tooLarge) {
            throw new LicenseServerWhmcs_Error('The license server\'s answer was too large; is the Hostname the license server?');
        }
        if ($ok === false) {
            throw new LicenseServerWhmcs_Error(
                'Could not reach the license server at ' . $this->baseUrl . ': ' . self::scrub($error)
            );
        }
        if ($json === null) {
            throw new LicenseServerWhmcs_Error(
                'The license server at ' . $this->baseUrl . ' answered HTTP ' . $status
                . ' without a JSON body; is the Hostname the license server\'s base URL?'
            );
        }
        return new LicenseServerWhmcs_Response($status, $json, $replayed);
    }

    /** A message for a refusal (a problem document), safe to show to an administrator. */
    public static function problem(LicenseServerWhmcs_Response $answer, string $doing): string
    {
        $json = $answer->json ?? [];
        $detail = is_string($json['detail'] ?? null) ? $json['detail'] : '';
        $title = is_string($json['title'] ?? null) ? $json['title'] : 'HTTP ' . $answer->status;
        if ($answer->status === 401) {
            $why = 'the license server refused the API key (' . ($detail !== '' ? $detail : 'unauthorized') . ')';
        } elseif ($answer->status === 403) {
            $why = 'the API key may not do this (' . ($detail !== '' ? $detail : 'forbidden') . ')';
        } else {
            $why = 'the license server answered ' . $answer->status . ' ' . $title . ($detail !== '' ? ': ' . $detail : '');
        }
        return self::scrub('Could not ' . $doing . ': ' . $why);
    }

    private function log(string $method, string $path, string $payload, string $idempotencyKey, string $answer, ?array $json): void
    {
        if (!function_exists('logModuleCall')) {
            return;
        }
        if (is_array($json) && is_string($json['license_key'] ?? null)) {
            $answer = str_replace($json['license_key'], self::maskKey($json['license_key']), $answer);
            $json['license_key'] = self::maskKey($json['license_key']);
        }
        $request = $method . ' ' . $this->baseUrl . $path
            . ($idempotencyKey !== '' ? "\nIdempotency-Key: " . $idempotencyKey : '')
            . ($payload !== '' ? "\n\n" . $payload : '');
        try {
            logModuleCall(self::MODULE, $this->action, self::scrub($request), self::scrub($answer), $json === null ? '' : $json, array_values(array_filter(self::$secrets)));
        } catch (Throwable $ignored) {
            // The module log is a convenience: a failure to write it must not fail the action.
        }
    }
}

/** The service-level work: which license a WHMCS service has, and what each action does to it. */
final class LicenseServerWhmcs_Module
{
    const FIELD_KEY = 'License Key';
    const FIELD_ID = 'License ID';
    const MAX_LICENSEE = 200;

    /**
     * Runs `$work` for a WHMCS entry point: its result, or the message of whatever went wrong
     * (never a fatal error, never a secret).
     */
    public static function run(callable $work)
    {
        try {
            return $work();
        } catch (LicenseServerWhmcs_Error $error) {
            return LicenseServerWhmcs_Api::scrub($error->getMessage());
        } catch (Throwable $error) {
            $message = 'Unexpected error in the license server module (' . get_class($error) . '): '
                . $error->getMessage();
            return LicenseServerWhmcs_Api::scrub($message);
        }
    }

    public static function serviceId(array $params): int
    {
        $id = $params['serviceid'] ?? '';
        if (!is_numeric($id) || (int) $id < 1) {
            throw new LicenseServerWhmcs_Error('No WHMCS service id was given to the module.');
        }
        return (int) $id;
    }

    /** The service as WHMCS's GetClientsProducts sees it (next due date, custom fields). */
    public static function service(array $params): array
    {
        $serviceId = self::serviceId($params);
        $answer = localAPI('GetClientsProducts', ['serviceid' => $serviceId, 'stats' => false]);
        if (!is_array($answer) || ($answer['result'] ?? '') !== 'success') {
            $message = is_array($answer) ? (string) ($answer['message'] ?? '') : '';
            throw new LicenseServerWhmcs_Error('WHMCS could not read service #' . $serviceId . ': ' . $message);
        }
        $service = $answer['products']['product'][0] ?? null;
        if (!is_array($service)) {
            throw new LicenseServerWhmcs_Error('WHMCS has no service #' . $serviceId . '.');
        }
        return $service;
    }

    /** The service's custom fields: lower-case name (before any "|") => [id, value]. */
    public static function fields(array $service): array
    {
        $fields = [];
        $list = $service['customfields']['customfield'] ?? [];
        foreach (is_array($list) ? $list : [] as $field) {
            if (!is_array($field) || !isset($field['id'], $field['name'])) {
                continue;
            }
            $name = strtolower(trim(explode('|', (string) $field['name'])[0]));
            $fields[$name] = ['id' => (int) $field['id'], 'value' => trim((string) ($field['value'] ?? ''))];
        }
        return $fields;
    }

    public static function fieldValue(array $service, string $name): string
    {
        $fields = self::fields($service);
        return $fields[strtolower($name)]['value'] ?? '';
    }

    /** Stores custom field values (name => value) on the service through WHMCS's local API. */
    public static function storeFields(int $serviceId, array $service, array $values): void
    {
        $fields = self::fields($service);
        $byId = [];
        foreach ($values as $name => $value) {
            $field = $fields[strtolower($name)] ?? null;
            if ($field === null) {
                continue; // checked before anything was created (requireFields)
            }
            $byId[$field['id']] = $value;
        }
        if (!$byId) {
            return;
        }
        // WHMCS's documented format for UpdateClientProduct: base64 of a serialized array
        // (we only ever serialize our own strings; nothing here is unserialized).
        $answer = localAPI('UpdateClientProduct', [
            'serviceid' => $serviceId,
            'customfields' => base64_encode(serialize($byId)),
        ]);
        if (!is_array($answer) || ($answer['result'] ?? '') !== 'success') {
            $message = is_array($answer) ? (string) ($answer['message'] ?? '') : '';
            throw new LicenseServerWhmcs_Error(
                'The license was issued, but WHMCS could not store it in the service\'s custom fields (' . $message
                . '). Run Create again: it finds the same license.'
            );
        }
    }

    public static function requireFields(array $service): void
    {
        if (!isset(self::fields($service)[strtolower(self::FIELD_KEY)])) {
            throw new LicenseServerWhmcs_Error(
                'The product has no custom field named "' . self::FIELD_KEY . '" (and should have one named "'
                . self::FIELD_ID . '"): create them in the product\'s Custom Fields tab (tick Admin Only), then run Create again.'
            );
        }
    }

    /** The license of the service (the API's license object), or null if none is recorded. */
    public static function findLicense(LicenseServerWhmcs_Api $api, array $service): ?array
    {
        $id = self::fieldValue($service, self::FIELD_ID);
        if ($id !== '' && ctype_digit($id)) {
            return self::getLicense($api, (int) $id);
        }
        $key = self::fieldValue($service, self::FIELD_KEY);
        if ($key === '') {
            return null;
        }
        $answer = $api->request(
            'GET',
            '/api/v1/licenses?key=' . rawurlencode($key) . '&limit=1',
            null,
            '',
            '/api/v1/licenses?key=' . LicenseServerWhmcs_Api::maskKey($key) . '&limit=1'
        );
        if ($answer->status !== 200) {
            throw new LicenseServerWhmcs_Error(LicenseServerWhmcs_Api::problem($answer, 'find the license of this service'));
        }
        $first = $answer->json['items'][0]['id'] ?? null;
        return is_int($first) ? self::getLicense($api, $first) : null;
    }

    public static function requireLicense(LicenseServerWhmcs_Api $api, array $service): array
    {
        $license = self::findLicense($api, $service);
        if ($license === null) {
            throw new LicenseServerWhmcs_Error(
                'No license is recorded for this service (its "' . self::FIELD_ID . '" and "' . self::FIELD_KEY
                . '" custom fields are empty): run Create first.'
            );
        }
        return $license;
    }

    public static function getLicense(LicenseServerWhmcs_Api $api, int $id): array
    {
        $answer = $api->request('GET', '/api/v1/licenses/' . $id);
        if ($answer->status !== 200) {
            throw new LicenseServerWhmcs_Error(LicenseServerWhmcs_Api::problem($answer, 'read license ' . $id));
        }
        return $answer->json;
    }

    /**
     * A lifecycle action (suspend, unsuspend, revoke, reissue, renew) on the license; the
     * license after it. `$inEffect` tells from a license whether the action has taken effect:
     * when the server replays an earlier answer for the Idempotency-Key (a retry of a request
     * that did run) but the license has changed since (suspended, unsuspended and suspended
     * again within one second of `updated_at`), the action is sent again under a fresh key.
     */
    public static function act(
        LicenseServerWhmcs_Api $api,
        array $license,
        string $action,
        string $idempotencyKey,
        callable $inEffect,
        ?array $body = null
    ): array {
        $path = '/api/v1/licenses/' . (int) $license['id'] . '/' . $action;
        $answer = $api->request('POST', $path, $body, $idempotencyKey);
        if ($answer->status === 200 && $answer->replayed) {
            $now = self::getLicense($api, (int) $license['id']);
            if ($inEffect($now)) {
                return $now;
            }
            $answer = $api->request('POST', $path, $body, $idempotencyKey . '-' . bin2hex(random_bytes(6)));
        }
        if ($answer->status !== 200) {
            throw new LicenseServerWhmcs_Error(LicenseServerWhmcs_Api::problem($answer, $action . ' license ' . (int) $license['id']));
        }
        return $answer->json;
    }

    /** A test of a license's status, for act(). */
    public static function statusIs(string ...$statuses): callable
    {
        return function (array $license) use ($statuses) {
            return in_array($license['status'] ?? '', $statuses, true);
        };
    }

    /**
     * An Idempotency-Key for `$action` on the service's license in its present state: the
     * same retried request gets the same key (and the server's first answer), a later action
     * of the same kind (suspend, unsuspend, suspend again) a new one.
     */
    public static function idempotencyKey(int $serviceId, string $action, array $license, string $state): string
    {
        return 'whmcs-' . $serviceId . '-' . $action . '-' . (int) $license['id'] . '-' . preg_replace('/[^A-Za-z0-9]/', '', $state);
    }

    /** The seats the service asks for: a configurable option "Seats", else the module setting. */
    public static function seats(array $params): ?int
    {
        $options = $params['configoptions'] ?? [];
        $candidates = [is_array($options) ? ($options['Seats'] ?? '') : '', $params['configoption2'] ?? ''];
        foreach ($candidates as $value) {
            $value = trim((string) $value);
            if ($value !== '' && ctype_digit($value) && (int) $value >= 1) {
                return (int) $value;
            }
        }
        return null;
    }

    public static function productCode(array $params): string
    {
        $code = strtolower(trim((string) ($params['configoption1'] ?? '')));
        if ($code === '') {
            throw new LicenseServerWhmcs_Error('Set the license server Product Code in the product\'s Module Settings.');
        }
        return $code;
    }

    /**
     * The license's last valid day for the service: its next due date plus the grace days,
     * or null (no expiry) for one-time and free services, which have no due date.
     */
    public static function wantedExpiry(array $params, array $service): ?string
    {
        $due = trim((string) ($service['nextduedate'] ?? ''));
        if (!preg_match('/^(\d{4})-(\d{2})-(\d{2})$/', $due, $m) || $due === '0000-00-00' || !checkdate((int) $m[2], (int) $m[3], (int) $m[1])) {
            return null;
        }
        $grace = trim((string) ($params['configoption4'] ?? ''));
        $days = ctype_digit($grace) ? min((int) $grace, 3650) : 0;
        $day = new DateTimeImmutable($due, new DateTimeZone('UTC'));
        return $day->modify('+' . $days . ' days')->format('Y-m-d');
    }

    /** The last valid day of a license (its `expires_at` is the midnight UTC after it), or null. */
    public static function lastValidDay(array $license): ?string
    {
        $at = $license['expires_at'] ?? null;
        if (!is_string($at) || ($time = strtotime($at)) === false) {
            return null;
        }
        return gmdate('Y-m-d', $time - 1);
    }

    /**
     * Renews the license to the service's wanted expiry when it differs and the server can
     * take it (a future date; not while suspended, which the API refuses). The license after.
     */
    public static function syncExpiry(LicenseServerWhmcs_Api $api, array $params, array $service, array $license): array
    {
        $wanted = self::wantedExpiry($params, $service);
        if ($wanted === self::lastValidDay($license) || !in_array($license['status'], ['active', 'pending', 'expired'], true)) {
            return $license;
        }
        if ($wanted !== null && $wanted < gmdate('Y-m-d')) {
            return $license;
        }
        $key = self::idempotencyKey(self::serviceId($params), 'renew', $license, $wanted ?? 'none');
        $renewed = function (array $now) use ($wanted) {
            return self::lastValidDay($now) === $wanted;
        };
        return self::act($api, $license, 'renew', $key, $renewed, ['expires' => $wanted]);
    }

    public static function licensee(array $params): array
    {
        $client = $params['clientsdetails'] ?? [];
        $client = is_array($client) ? $client : [];
        $name = trim((string) ($client['fullname'] ?? ''));
        if ($name === '') {
            $name = trim(trim((string) ($client['firstname'] ?? '')) . ' ' . trim((string) ($client['lastname'] ?? '')));
        }
        $company = trim((string) ($client['companyname'] ?? ''));
        if ($name === '') {
            $name = $company !== '' ? $company : 'WHMCS client #' . (int) ($params['userid'] ?? 0);
        }
        return [self::cut($name), self::cut($company), trim((string) ($client['email'] ?? ''))];
    }

    private static function cut(string $text): string
    {
        return preg_match('/^.{0,' . self::MAX_LICENSEE . '}/us', $text, $m) ? $m[0] : substr($text, 0, self::MAX_LICENSEE);
    }

    // ---------------------------------------------------------------- the actions

    public static function create(array $params): string
    {
        $api = LicenseServerWhmcs_Api::fromParams($params, 'CreateAccount');
        $serviceId = self::serviceId($params);
        $service = self::service($params);
        self::requireFields($service);
        $idempotencyKey = 'whmcs-' . $serviceId . '-create';
        $existing = self::findLicense($api, $service);
        if ($existing !== null) {
            if ($existing['status'] !== 'revoked') {
                return 'success'; // already provisioned: a retry, or Create clicked twice
            }
            $idempotencyKey .= '-after-' . (int) $existing['id']; // terminated, created anew
        }
        [$licensee, $company, $email] = self::licensee($params);
        $body = ['product' => self::productCode($params), 'licensee' => $licensee, 'email' => $email];
        if ($company !== '') {
            $body['company'] = $company;
        }
        $seats = self::seats($params);
        if ($seats !== null) {
            $body['seats'] = $seats;
        }
        $expires = self::wantedExpiry($params, $service);
        if ($expires !== null && $expires >= gmdate('Y-m-d')) {
            $body['expires'] = $expires;
        }
        $body['notes'] = 'WHMCS service #' . $serviceId;
        $answer = $api->request('POST', '/api/v1/licenses', $body, $idempotencyKey);
        if ($answer->status !== 201 || !is_string($answer->json['license_key'] ?? null) || !is_int($answer->json['id'] ?? null)) {
            throw new LicenseServerWhmcs_Error(LicenseServerWhmcs_Api::problem($answer, 'issue the license'));
        }
        self::storeFields($serviceId, $service, [
            self::FIELD_KEY => $answer->json['license_key'],
            self::FIELD_ID => (string) $answer->json['id'],
        ]);
        return 'success';
    }

    public static function suspend(array $params): string
    {
        $api = LicenseServerWhmcs_Api::fromParams($params, 'SuspendAccount');
        $license = self::requireLicense($api, self::service($params));
        if ($license['status'] === 'suspended' || $license['status'] === 'expired') {
            return 'success'; // already not working (the API cannot suspend an expired license)
        }
        if ($license['status'] === 'revoked') {
            throw new LicenseServerWhmcs_Error('License ' . (int) $license['id'] . ' is revoked; there is nothing to suspend.');
        }
        $key = self::idempotencyKey(self::serviceId($params), 'suspend', $license, (string) $license['updated_at']);
        self::act($api, $license, 'suspend', $key, self::statusIs('suspended'));
        return 'success';
    }

    public static function unsuspend(array $params): string
    {
        $api = LicenseServerWhmcs_Api::fromParams($params, 'UnsuspendAccount');
        $service = self::service($params);
        $license = self::requireLicense($api, $service);
        if ($license['status'] === 'revoked') {
            throw new LicenseServerWhmcs_Error('License ' . (int) $license['id'] . ' is revoked; it cannot be unsuspended. Terminate and create the service anew.');
        }
        if ($license['status'] === 'suspended') {
            $key = self::idempotencyKey(self::serviceId($params), 'unsuspend', $license, (string) $license['updated_at']);
            $license = self::act($api, $license, 'unsuspend', $key, self::statusIs('active', 'pending', 'expired'));
        }
        $license = self::syncExpiry($api, $params, $service, $license);
        if ($license['status'] === 'expired') {
            throw new LicenseServerWhmcs_Error(
                'License ' . (int) $license['id'] . ' is no longer suspended but has expired, and the service\'s next due date is past: renew the service.'
            );
        }
        return 'success';
    }

    public static function terminate(array $params): string
    {
        $api = LicenseServerWhmcs_Api::fromParams($params, 'TerminateAccount');
        $license = self::requireLicense($api, self::service($params));
        if ($license['status'] !== 'revoked') {
            $key = self::idempotencyKey(self::serviceId($params), 'terminate', $license, 'revoke');
            self::act($api, $license, 'revoke', $key, self::statusIs('revoked'));
        }
        return 'success';
    }

    public static function renew(array $params): string
    {
        $api = LicenseServerWhmcs_Api::fromParams($params, 'Renew');
        $service = self::service($params);
        $license = self::requireLicense($api, $service);
        if ($license['status'] === 'revoked') {
            throw new LicenseServerWhmcs_Error('License ' . (int) $license['id'] . ' is revoked; it cannot be renewed.');
        }
        if ($license['status'] === 'suspended') {
            // The API refuses to renew a suspended license; Unsuspend applies the due date.
            return 'success';
        }
        $wanted = self::wantedExpiry($params, $service);
        if ($wanted !== null && $wanted < gmdate('Y-m-d')) {
            throw new LicenseServerWhmcs_Error('The service\'s next due date (' . $wanted . ' with the grace days) is in the past; there is nothing to renew to.');
        }
        self::syncExpiry($api, $params, $service, $license);
        return 'success';
    }

    public static function reissue(array $params): string
    {
        $api = LicenseServerWhmcs_Api::fromParams($params, 'Reissue');
        $license = self::requireLicense($api, self::service($params));
        if (!in_array($license['status'], ['active', 'pending'], true)) {
            throw new LicenseServerWhmcs_Error('Only an active license can be reissued; this one is ' . $license['status'] . '.');
        }
        if (empty($license['bindings'])) {
            return 'success'; // nothing bound: the next check binds anyway
        }
        $key = self::idempotencyKey(self::serviceId($params), 'reissue', $license, (string) $license['reissue_count']);
        $count = (int) $license['reissue_count'];
        self::act($api, $license, 'reissue', $key, function (array $now) use ($count) {
            return (int) ($now['reissue_count'] ?? 0) > $count;
        });
        return 'success';
    }

    public static function changePackage(array $params): string
    {
        $api = LicenseServerWhmcs_Api::fromParams($params, 'ChangePackage');
        $license = self::requireLicense($api, self::service($params));
        $code = self::productCode($params);
        if ($code !== strtolower((string) $license['product'])) {
            throw new LicenseServerWhmcs_Error(
                'License ' . (int) $license['id'] . ' is for product "' . $license['product'] . '" and a license cannot move to another product ("'
                . $code . '"): terminate this service and create a new one instead.'
            );
        }
        $seats = self::seats($params);
        if ($seats === null || $seats === (int) $license['seats']) {
            return 'success';
        }
        $answer = $api->request('PATCH', '/api/v1/licenses/' . (int) $license['id'], ['seats' => $seats]);
        if ($answer->status === 404 || $answer->status === 405) {
            throw new LicenseServerWhmcs_Error(
                'This license server cannot change a license\'s seats yet (PATCH /api/v1/licenses/' . (int) $license['id'] . ' answered '
                . $answer->status . '): upgrade it, or change the seats in its admin.'
            );
        }
        if ($answer->status !== 200) {
            throw new LicenseServerWhmcs_Error(LicenseServerWhmcs_Api::problem($answer, 'change the seats of license ' . (int) $license['id']));
        }
        return 'success';
    }

    /** @return array{success: bool, error: string} */
    public static function testConnection(array $params): array
    {
        $api = LicenseServerWhmcs_Api::fromParams($params, 'TestConnection');
        $answer = $api->request('GET', '/api/v1/licenses?limit=1');
        if ($answer->status !== 200) {
            return ['success' => false, 'error' => LicenseServerWhmcs_Api::problem($answer, 'connect')];
        }
        if (!array_key_exists('items', $answer->json)) {
            return ['success' => false, 'error' => 'The Hostname answers, but not as the license server\'s API does.'];
        }
        return ['success' => true, 'error' => ''];
    }

    public static function clientArea(array $params): string
    {
        try {
            $api = LicenseServerWhmcs_Api::fromParams($params, 'ClientArea');
            $service = self::service($params);
            $license = self::findLicense($api, $service);
            if ($license === null) {
                return '<p class="licenseserver-unavailable">' . self::e('Your license is being prepared.') . '</p>';
            }
            $show = in_array(strtolower(trim((string) ($params['configoption3'] ?? ''))), ['on', 'yes', '1', 'true'], true);
            return self::renderLicense($license, self::fieldValue($service, self::FIELD_KEY), $show);
        } catch (Throwable $error) {
            // The reason is in the module log; the customer gets no internals.
            return '<p class="licenseserver-unavailable">' . self::e('The license details are not available right now.') . '</p>';
        }
    }

    /** The client area's HTML for a license (every value escaped). */
    public static function renderLicense(array $license, string $key, bool $showKey): string
    {
        $domains = [];
        foreach (is_array($license['bindings'] ?? null) ? $license['bindings'] : [] as $binding) {
            if (is_array($binding) && ($binding['kind'] ?? '') === 'domain') {
                $domains[] = (string) ($binding['value'] ?? '');
            }
        }
        $lastDay = self::lastValidDay($license);
        $rows = [
            'License key' => $key === '' ? '—' : ($showKey ? $key : LicenseServerWhmcs_Api::maskKey($key)),
            'Licensed to' => (string) ($license['licensee'] ?? ''),
            'Status' => ucfirst((string) ($license['status'] ?? '')),
            'Valid until' => $lastDay === null ? 'No expiry' : $lastDay,
            'Seats' => (string) (int) ($license['seats'] ?? 0),
        ];
        $html = '<div class="licenseserver-license"><table class="table table-striped">';
        foreach ($rows as $label => $value) {
            $html .= '<tr><th scope="row">' . self::e($label) . '</th><td>' . self::e($value) . '</td></tr>';
        }
        $html .= '<tr><th scope="row">' . self::e('Bound domains') . '</th><td>';
        if ($domains) {
            $html .= '<ul class="list-unstyled">';
            foreach ($domains as $domain) {
                $html .= '<li>' . self::e($domain) . '</li>';
            }
            $html .= '</ul>';
        } else {
            $html .= self::e('None yet: the first site that checks the license binds it.');
        }
        return $html . '</td></tr></table></div>';
    }

    public static function e(string $text): string
    {
        return htmlspecialchars($text, ENT_QUOTES | ENT_SUBSTITUTE | ENT_HTML5, 'UTF-8');
    }
}

}

// -------------------------------------------------------------------- the WHMCS module API

function licenseserver_MetaData()
{
    return [
        'DisplayName' => 'License Server',
        'APIVersion' => '1.1',
        'RequiresServer' => true,
        'DefaultNonSSLPort' => '80',
        'DefaultSSLPort' => '443',
    ];
}

function licenseserver_ConfigOptions()
{
    return [
        'Product Code' => [
            'Type' => 'text',
            'Size' => '32',
            'Default' => '',
            'Description' => 'The product\'s code on the license server (e.g. mymod)',
        ],
        'Seats' => [
            'Type' => 'text',
            'Size' => '6',
            'Default' => '',
            'Description' => 'Sites per license; blank: the product\'s default. A configurable option named "Seats" overrides it',
        ],
        'Show Key to Customer' => [
            'Type' => 'yesno',
            'Description' => 'Tick to show the whole license key in the client area (otherwise masked)',
        ],
        'Grace Days' => [
            'Type' => 'text',
            'Size' => '4',
            'Default' => '0',
            'Description' => 'Days the license stays valid after the service\'s next due date',
        ],
    ];
}

function licenseserver_CreateAccount(array $params)
{
    return LicenseServerWhmcs_Module::run(function () use ($params) {
        return LicenseServerWhmcs_Module::create($params);
    });
}

function licenseserver_SuspendAccount(array $params)
{
    return LicenseServerWhmcs_Module::run(function () use ($params) {
        return LicenseServerWhmcs_Module::suspend($params);
    });
}

function licenseserver_UnsuspendAccount(array $params)
{
    return LicenseServerWhmcs_Module::run(function () use ($params) {
        return LicenseServerWhmcs_Module::unsuspend($params);
    });
}

function licenseserver_TerminateAccount(array $params)
{
    return LicenseServerWhmcs_Module::run(function () use ($params) {
        return LicenseServerWhmcs_Module::terminate($params);
    });
}

function licenseserver_ChangePackage(array $params)
{
    return LicenseServerWhmcs_Module::run(function () use ($params) {
        return LicenseServerWhmcs_Module::changePackage($params);
    });
}

function licenseserver_Renew(array $params)
{
    return LicenseServerWhmcs_Module::run(function () use ($params) {
        return LicenseServerWhmcs_Module::renew($params);
    });
}

function licenseserver_Reissue(array $params)
{
    return LicenseServerWhmcs_Module::run(function () use ($params) {
        return LicenseServerWhmcs_Module::reissue($params);
    });
}

function licenseserver_AdminCustomButtonArray()
{
    return ['Reissue License' => 'Reissue'];
}

function licenseserver_ClientAreaCustomButtonArray()
{
    return ['Reissue License' => 'Reissue'];
}

function licenseserver_TestConnection(array $params)
{
    $result = LicenseServerWhmcs_Module::run(function () use ($params) {
        return LicenseServerWhmcs_Module::testConnection($params);
    });
    return is_array($result) ? $result : ['success' => false, 'error' => $result];
}

function licenseserver_ClientArea(array $params)
{
    $result = LicenseServerWhmcs_Module::run(function () use ($params) {
        return LicenseServerWhmcs_Module::clientArea($params);
    });
    return is_string($result) ? $result : '';
}
