<?php
/**
 * A license check written the way modules embedding WHMCS's sample `check_license()` do it,
 * for tests/test_whmcs_php.py. Written for these tests (not a copy of the sample), but it keeps
 * the sample's moving parts: configuration variables at the top, a "local key" built from the
 * last Active answer and trusted offline for $localkeydays, the form posted with curl as a
 * hand-concatenated query string with a trailing "&", the answer parsed with the sample's
 * regex, and md5hash compared against md5($licensing_secret_key . $check_token).
 *
 * Differences on purpose: the local key holds json_encode() output instead of serialize() (the
 * vendors' safer variant), and the module's identity (SERVER_NAME, server IP, dirname(__FILE__))
 * comes from the command line, since there is no web server here.
 *
 * Usage: php whmcs_style_client.php '<json config>'
 *   url         base URL of the licensing server, e.g. http://127.0.0.1:8080/ (trailing slash)
 *   secret      the product's WHMCS secret as shipped in the module
 *   licensekey  the license key
 *   domain, ip, dir   what the module reports as SERVER_NAME, SERVER_ADDR, dirname(__FILE__)
 *   localkey    (optional) the local key a previous run printed
 *   trimmed     (optional bool) post only licensekey and domain, like old hand-trimmed copies
 *               (which send no check_token either)
 *   raw_key     (optional bool) put the key into the body without urlencode()
 *
 * Prints one line of JSON: every parsed result tag, plus remotecheck (bool), localkey (string
 * or null), raw (base64 of the raw answer body, null when no request was made), check_token
 * (what was posted, "" when none) and http_code.
 */

error_reporting(E_ALL);

$config = json_decode(isset($argv[1]) ? $argv[1] : '', true);
if (!is_array($config)) {
    fwrite(STDERR, "usage: php whmcs_style_client.php '<json config>'\n");
    exit(2);
}

// ---- configuration, as a vendor edits it at the top of the module --------------------------
$whmcsurl = $config['url'];
$licensing_secret_key = $config['secret'];
$localkeydays = isset($config['localkeydays']) ? (int) $config['localkeydays'] : 15;
$allowcheckfaildays = 5;

// ---- the module's own identity ---------------------------------------------------------------
$module_identity = array(
    'domain' => $config['domain'],   // $_SERVER['SERVER_NAME']
    'ip' => $config['ip'],           // $_SERVER['SERVER_ADDR']
    'dir' => $config['dir'],         // dirname(__FILE__)
);

function testmod_check_license($licensekey, $localkey, array $options)
{
    global $whmcsurl, $licensing_secret_key, $localkeydays, $allowcheckfaildays, $module_identity;

    $trimmed = !empty($options['trimmed']);
    $check_token = $trimmed ? '' : time() . md5(mt_rand(100000000, mt_getrandmax()) . $licensekey);
    $checkdate = date('Ymd');
    $domain = $module_identity['domain'];
    $usersip = $module_identity['ip'];
    $dirpath = $module_identity['dir'];
    $verifyfilepath = 'modules/servers/licensing/verify.php';

    $localkeyvalid = false;
    $originalcheckdate = '';
    $localkeyresults = array();
    if ($localkey) {
        $localkey = str_replace("\n", '', $localkey);
        $localdata = substr($localkey, 0, strlen($localkey) - 32);
        $md5hash = substr($localkey, strlen($localkey) - 32);
        if ($md5hash === md5($localdata . $licensing_secret_key)) {
            $localdata = strrev($localdata);
            $md5hash = substr($localdata, 0, 32);
            $localdata = base64_decode(substr($localdata, 32), true);
            $decoded = $localdata === false ? null : json_decode($localdata, true);
            if (is_array($decoded) && isset($decoded['checkdate'])) {
                $localkeyresults = $decoded;
                $originalcheckdate = (string) $localkeyresults['checkdate'];
                if ($md5hash === md5($originalcheckdate . $licensing_secret_key)) {
                    $localexpiry = date('Ymd', mktime(0, 0, 0, (int) date('m'), (int) date('d') - $localkeydays, (int) date('Y')));
                    if ($originalcheckdate > $localexpiry) {
                        $localkeyvalid = true;
                        $results = $localkeyresults;
                        $checks = array(
                            array('validdomain', $domain),
                            array('validip', $usersip),
                            array('validdirectory', $dirpath),
                        );
                        foreach ($checks as $check) {
                            $allowed = explode(',', isset($results[$check[0]]) ? $results[$check[0]] : '');
                            if (!in_array($check[1], $allowed, true)) {
                                $localkeyvalid = false;
                                $localkeyresults['status'] = 'Invalid';
                                $results = array();
                                break;
                            }
                        }
                    }
                }
            }
        }
    }

    if ($localkeyvalid) {
        $results['remotecheck'] = false;
        $results['localkey'] = null;
        $results['raw'] = null;
        $results['check_token'] = $check_token;
        $results['http_code'] = null;
        return $results;
    }

    $postfields = array('licensekey' => $licensekey, 'domain' => $domain);
    if (!$trimmed) {
        $postfields['ip'] = $usersip;
        $postfields['dir'] = $dirpath;
        if ($check_token) {
            $postfields['check_token'] = $check_token;
        }
    }
    $query_string = '';
    foreach ($postfields as $k => $v) {
        if ($k === 'licensekey' && !empty($options['raw_key'])) {
            $query_string .= "$k=" . $v . '&'; // a module that forgot urlencode()
        } else {
            $query_string .= "$k=" . urlencode($v) . '&';
        }
    }

    $ch = curl_init();
    curl_setopt($ch, CURLOPT_URL, $whmcsurl . $verifyfilepath);
    curl_setopt($ch, CURLOPT_POST, 1);
    curl_setopt($ch, CURLOPT_POSTFIELDS, $query_string);
    curl_setopt($ch, CURLOPT_TIMEOUT, 30);
    curl_setopt($ch, CURLOPT_RETURNTRANSFER, 1);
    $data = curl_exec($ch);
    $responseCode = (int) curl_getinfo($ch, CURLINFO_HTTP_CODE);
    curl_close($ch);
    if (!is_string($data)) {
        $data = '';
    }

    $extra = array(
        'remotecheck' => true,
        'localkey' => null,
        'raw' => base64_encode($data),
        'check_token' => $check_token,
        'http_code' => $responseCode,
    );

    if ($responseCode !== 200 || $data === '') {
        // The sample's fallback: an old local key is still honoured for a few more days.
        $localexpiry = date('Ymd', mktime(0, 0, 0, (int) date('m'), (int) date('d') - ($localkeydays + $allowcheckfaildays), (int) date('Y')));
        if ($originalcheckdate !== '' && $originalcheckdate > $localexpiry) {
            return array_merge($localkeyresults, $extra);
        }
        return array_merge(array('status' => 'Invalid', 'description' => 'Remote Check Failed'), $extra);
    }

    preg_match_all('/<(.*?)>([^<]+)<\/\1>/i', $data, $matches);
    $results = array();
    foreach ($matches[1] as $k => $v) {
        $results[$v] = $matches[2][$k];
    }
    if (!isset($results['status'])) {
        return array_merge(array('status' => 'Invalid', 'description' => 'Invalid License Server Response'), $extra);
    }

    if (isset($results['md5hash']) && $results['md5hash'] !== '') {
        if ($results['md5hash'] !== md5($licensing_secret_key . $check_token)) {
            $results['status'] = 'Invalid';
            $results['description'] = 'MD5 Checksum Verification Failed';
            return array_merge($results, $extra);
        }
    }

    if ($results['status'] === 'Active') {
        $results['checkdate'] = $checkdate;
        $data_encoded = json_encode($results);
        $data_encoded = base64_encode($data_encoded);
        $data_encoded = md5($checkdate . $licensing_secret_key) . $data_encoded;
        $data_encoded = strrev($data_encoded);
        $data_encoded = $data_encoded . md5($data_encoded . $licensing_secret_key);
        $data_encoded = wordwrap($data_encoded, 80, "\n", true);
        $extra['localkey'] = $data_encoded;
    }
    return array_merge($results, $extra);
}

$results = testmod_check_license(
    $config['licensekey'],
    isset($config['localkey']) ? $config['localkey'] : '',
    array(
        'trimmed' => !empty($config['trimmed']),
        'raw_key' => !empty($config['raw_key']),
    )
);
echo json_encode($results, JSON_UNESCAPED_SLASHES), "\n";
