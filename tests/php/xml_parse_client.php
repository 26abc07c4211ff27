<?php
/**
 * A module that reads the WHMCS-compatible answer as XML: it wraps the body in a root element
 * and hands it to simplexml_load_string(), as some vendors' variants of the sample do. For
 * tests/test_whmcs_php.py.
 *
 * Usage: php xml_parse_client.php <base64 of the answer body>
 * Prints one line of JSON: {"parsed": bool, "errors": [libxml messages], "fields": {tag: text}}
 * where the text is what the XML parser decoded (entities resolved).
 */

error_reporting(E_ALL);

if (!function_exists('simplexml_load_string')) {
    fwrite(STDERR, "xml_parse_client.php: the SimpleXML extension is missing (php-xml)\n");
    exit(3);
}
$body = base64_decode(isset($argv[1]) ? $argv[1] : '', true);
if ($body === false) {
    fwrite(STDERR, "usage: php xml_parse_client.php <base64 body>\n");
    exit(2);
}

libxml_use_internal_errors(true);
$xml = simplexml_load_string('<root>' . $body . '</root>');
$errors = array();
foreach (libxml_get_errors() as $error) {
    $errors[] = trim($error->message);
}
libxml_clear_errors();

$fields = array();
if ($xml !== false) {
    foreach ($xml->children() as $name => $node) {
        $fields[$name] = (string) $node;
    }
}
echo json_encode(array('parsed' => $xml !== false, 'errors' => $errors, 'fields' => $fields), JSON_UNESCAPED_SLASHES), "\n";
