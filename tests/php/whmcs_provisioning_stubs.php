<?php
/**
 * The handful of WHMCS functions the provisioning module calls, stubbed for
 * tests/test_whmcs_provisioning.py. WHMCS itself is not available to the tests; these behave
 * as WHMCS documents them, on an in-memory service that the test passes in and reads back:
 *
 * - localAPI('GetClientsProducts', ['serviceid' => N]): the service (next due date and its
 *   custom fields as [id, name, value]);
 * - localAPI('UpdateClientProduct', ['serviceid' => N, 'customfields' => base64(serialize)]):
 *   stores custom field values by field id (or fails, when the test asks it to);
 * - logModuleCall(...): records every argument exactly as the module passed it, before the
 *   replacement WHMCS would apply, so the test sees what the module itself put in the log.
 */

define('WHMCS', true);

$GLOBALS['whmcs_stub'] = [
    'service' => [],
    'fail_update' => false,
    'api_calls' => [],
    'module_log' => [],
];

function localAPI($command, $values = [], $adminUser = '')
{
    $stub =& $GLOBALS['whmcs_stub'];
    $stub['api_calls'][] = ['command' => $command, 'values' => $values];
    $service =& $stub['service'];
    if ((int) ($values['serviceid'] ?? 0) !== (int) $service['id']) {
        return ['result' => 'error', 'message' => 'Service ID Not Found'];
    }
    if ($command === 'GetClientsProducts') {
        $product = $service;
        $product['customfields'] = ['customfield' => $service['customfields']];
        return ['result' => 'success', 'totalresults' => 1, 'products' => ['product' => [$product]]];
    }
    if ($command === 'UpdateClientProduct') {
        if ($stub['fail_update']) {
            return ['result' => 'error', 'message' => 'Database error (stubbed)'];
        }
        // The test's own stand-in for WHMCS, reading what the module serialized.
        $values = unserialize(base64_decode($values['customfields']), ['allowed_classes' => false]);
        foreach ($values as $id => $value) {
            foreach ($service['customfields'] as &$field) {
                if ((int) $field['id'] === (int) $id) {
                    $field['value'] = $value;
                }
            }
            unset($field);
        }
        return ['result' => 'success', 'serviceid' => $service['id']];
    }
    return ['result' => 'error', 'message' => 'command not stubbed: ' . $command];
}

function logModuleCall($module, $action, $requestString, $responseData, $processedData = '', $replaceVars = [])
{
    $GLOBALS['whmcs_stub']['module_log'][] = [
        'module' => $module,
        'action' => $action,
        'request' => $requestString,
        'response' => $responseData,
        'processed' => $processedData,
        'replace' => $replaceVars,
    ];
}
