<?php
/**
 * Runs one function of the WHMCS provisioning module under the stubs of
 * whmcs_provisioning_stubs.php, for tests/test_whmcs_provisioning.py.
 *
 * Reads one JSON object on stdin:
 *   function     the module function without its prefix (CreateAccount, ClientArea, ...),
 *                or "renderLicense" (the client area's HTML for a given license)
 *   params       the $params WHMCS passes (serviceid, server*, configoption*, clientsdetails)
 *   service      the WHMCS service: id, nextduedate, customfields [{id, name, value}]
 *   fail_update  (optional) UpdateClientProduct fails
 *   license, key, show   (renderLicense only)
 * Prints one JSON line: result (what the function returned), service (after the call),
 * module_log (each entry with hides_key: whether the API key was given to WHMCS to hide) and
 * api_calls (the localAPI calls).
 */

error_reporting(E_ALL);
require __DIR__ . '/whmcs_provisioning_stubs.php';
require __DIR__ . '/../../clients/whmcs-provisioning/modules/servers/licenseserver/licenseserver.php';

$input = json_decode(stream_get_contents(STDIN), true);
if (!is_array($input)) {
    fwrite(STDERR, "expected a JSON object on stdin\n");
    exit(2);
}
$GLOBALS['whmcs_stub']['service'] = $input['service'] ?? ['id' => 0, 'customfields' => []];
$GLOBALS['whmcs_stub']['fail_update'] = !empty($input['fail_update']);

$function = (string) $input['function'];
if ($function === 'renderLicense') {
    $result = LicenseServerWhmcs_Module::renderLicense($input['license'], $input['key'], (bool) $input['show']);
} else {
    $name = 'licenseserver_' . $function;
    if (!function_exists($name)) {
        fwrite(STDERR, "no such module function: $name\n");
        exit(2);
    }
    $params = $input['params'] ?? [];
    $result = in_array($function, ['MetaData', 'ConfigOptions', 'AdminCustomButtonArray', 'ClientAreaCustomButtonArray'], true)
        ? $name()
        : $name($params);
}

// The values the module asked WHMCS to hide are not printed (they are the API key): only
// whether the key was among them.
$apiKey = (string) ($input['params']['serverpassword'] ?? '');
$log = [];
foreach ($GLOBALS['whmcs_stub']['module_log'] as $entry) {
    $entry['hides_key'] = $apiKey !== '' && in_array($apiKey, $entry['replace'], true);
    unset($entry['replace']);
    $log[] = $entry;
}

echo json_encode([
    'result' => $result,
    'service' => $GLOBALS['whmcs_stub']['service'],
    'module_log' => $log,
    'api_calls' => $GLOBALS['whmcs_stub']['api_calls'],
], JSON_UNESCAPED_SLASHES | JSON_UNESCAPED_UNICODE | JSON_PARTIAL_OUTPUT_ON_ERROR), "\n";
