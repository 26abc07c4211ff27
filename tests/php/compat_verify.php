<?php
/**
 * Does LicenseServer_CompatSignature::verify() accept an answer of the WHMCS-compatible
 * endpoint? For tests/test_whmcs_php.py.
 *
 * Usage: php compat_verify.php '<json>' with
 *   raw          base64 of the exact answer body
 *   check_token  the check_token to verify it against
 *   jwks         the JSON text of GET /.well-known/jwks.json
 * Prints one line of JSON: {"verified": true|false, "kids": [...]}.
 */

error_reporting(E_ALL);
require_once __DIR__ . '/../../clients/php/LicenseClient.php';

$input = json_decode(isset($argv[1]) ? $argv[1] : '', true);
if (!is_array($input) || !isset($input['raw'], $input['check_token'], $input['jwks'])) {
    fwrite(STDERR, "usage: php compat_verify.php '{\"raw\": B64, \"check_token\": T, \"jwks\": JSON}'\n");
    exit(2);
}
$body = base64_decode($input['raw'], true);
$jwks = json_decode($input['jwks'], true);
if ($body === false || !is_array($jwks) || !isset($jwks['keys']) || !is_array($jwks['keys'])) {
    fwrite(STDERR, "compat_verify.php: raw is not base64 or jwks is not a key set\n");
    exit(2);
}
// What a vendor pastes into the module: kid => base64url x of every Ed25519 key.
$publicKeys = array();
foreach ($jwks['keys'] as $jwk) {
    if (isset($jwk['kty'], $jwk['crv'], $jwk['kid'], $jwk['x']) && $jwk['kty'] === 'OKP' && $jwk['crv'] === 'Ed25519') {
        $publicKeys[$jwk['kid']] = $jwk['x'];
    }
}
$verified = LicenseServer_CompatSignature::verify($body, (string) $input['check_token'], $publicKeys);
echo json_encode(array('verified' => $verified, 'kids' => array_keys($publicKeys))), "\n";
