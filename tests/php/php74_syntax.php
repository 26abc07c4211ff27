<?php
/**
 * A PHP 7.4 compatibility check by tokens, for the files we ship to WHMCS installs that may
 * still run PHP 7.4 while the tests run a newer PHP (tests/test_whmcs_provisioning.py).
 *
 * It flags what PHP 8.0+ added and PHP 7.4 cannot parse or does not have: match, the nullsafe
 * operator, attributes, enums, readonly; named arguments; constructor property promotion;
 * union, mixed, never and static types in signatures; a trailing comma in a parameter list;
 * catch without a variable; and the functions that are new in PHP 8 (str_contains, ...).
 * It is a check of the syntax PHP 8 added, not a full 7.4 parser: `php -l` on 7.4 itself would
 * be stronger, and is what to run where a 7.4 binary exists.
 *
 * Usage: php php74_syntax.php FILE... ; prints one JSON line {"FILE": ["line N: what", ...]}.
 */

const PHP8_FUNCTIONS = [
    'str_contains', 'str_starts_with', 'str_ends_with', 'get_debug_type', 'array_is_list',
    'fdiv', 'get_resource_id', 'preg_last_error_msg', 'enum_exists', 'array_find', 'json_validate',
];

function php8_findings(string $code): array
{
    $findings = [];
    $tokens = array_values(array_filter(token_get_all($code), function ($t) {
        return !is_array($t) || !in_array($t[0], [T_WHITESPACE, T_COMMENT, T_DOC_COMMENT], true);
    }));
    $named = [];
    foreach (['T_MATCH' => 'match', 'T_NULLSAFE_OBJECT_OPERATOR' => 'nullsafe ?->', 'T_ATTRIBUTE' => 'attribute #[',
              'T_ENUM' => 'enum', 'T_READONLY' => 'readonly'] as $constant => $what) {
        if (defined($constant)) {
            $named[constant($constant)] = $what;
        }
    }
    $line = 1;
    $count = count($tokens);
    $text = function ($i) use ($tokens) {
        return $i >= 0 && $i < count($tokens) ? (is_array($tokens[$i]) ? $tokens[$i][1] : $tokens[$i]) : '';
    };
    for ($i = 0; $i < $count; $i++) {
        $token = $tokens[$i];
        if (is_array($token)) {
            $line = $token[2];
            if (isset($named[$token[0]])) {
                $findings[] = "line $line: {$named[$token[0]]}";
            }
            if (in_array(strtolower($token[1]), PHP8_FUNCTIONS, true) && $text($i + 1) === '(' && $text($i - 1) !== 'function') {
                $findings[] = "line $line: PHP 8 function {$token[1]}()";
            }
            if ($token[0] === T_CATCH) {
                $j = $i + 2; // after "catch ("
                while ($j < $count && $text($j) !== ')' && !(is_array($tokens[$j]) && $tokens[$j][0] === T_VARIABLE)) {
                    $j++;
                }
                if ($text($j) === ')') {
                    $findings[] = "line $line: catch without a variable";
                }
            }
            if ($token[0] === T_FUNCTION || $token[0] === T_FN) {
                $findings = array_merge($findings, signature_findings($tokens, $i, $line, $text));
            }
        }
        // Named argument: "(" or "," then an identifier then a single ":" (not "::", not "?:").
        if (($text($i) === '(' || $text($i) === ',') && is_array($tokens[$i + 1] ?? null)
            && $tokens[$i + 1][0] === T_STRING && $text($i + 2) === ':' && !in_array($text($i - 1), ['?'], true)
            && !inside_ternary($tokens, $i)) {
            $findings[] = "line $line: named argument {$tokens[$i + 1][1]}:";
        }
    }
    return $findings;
}

/** A "?" opened since the last "(" at this depth: then "a ? b : c" is not a named argument. */
function inside_ternary(array $tokens, int $i): bool
{
    $depth = 0;
    for ($j = $i; $j >= 0; $j--) {
        $t = is_array($tokens[$j]) ? $tokens[$j][1] : $tokens[$j];
        if ($t === ')' || $t === ']') {
            $depth++;
        } elseif ($t === '(' || $t === '[') {
            if ($depth === 0) {
                return false;
            }
            $depth--;
        } elseif ($t === '?' && $depth === 0) {
            return true;
        }
    }
    return false;
}

function signature_findings(array $tokens, int $i, int $line, callable $text): array
{
    $findings = [];
    $j = $i + 1;
    while ($j < count($tokens) && $text($j) !== '(') {
        $j++;
    }
    $depth = 0;
    $previous = '';
    $inDefault = false;
    for ($k = $j; $k < count($tokens); $k++) {
        $t = $text($k);
        if ($t === '(' || $t === '[') {
            $depth++;
        } elseif ($t === ')' || $t === ']') {
            $depth--;
            if ($depth === 0) {
                if ($previous === ',') {
                    $findings[] = "line $line: trailing comma in a parameter list";
                }
                break;
            }
        } elseif ($depth === 1) {
            if ($t === '=') {
                $inDefault = true;
            } elseif ($t === ',') {
                $inDefault = false;
            } elseif (!$inDefault && $t === '|') {
                $findings[] = "line $line: union type";
            } elseif (!$inDefault && in_array(strtolower($t), ['public', 'private', 'protected', 'readonly'], true)) {
                $findings[] = "line $line: constructor property promotion";
            } elseif (!$inDefault && in_array(strtolower($t), ['mixed'], true)) {
                $findings[] = "line $line: mixed type";
            }
        }
        $previous = $t;
    }
    // Return type: ") : type".
    if ($text($k + 1) === ':') {
        $m = $k + 2;
        if ($text($m) === '?') {
            $m++;
        }
        $type = strtolower($text($m));
        if (in_array($type, ['mixed', 'never', 'static', 'false', 'null', 'true'], true)) {
            $findings[] = "line $line: return type $type";
        }
        if ($text($m + 1) === '|') {
            $findings[] = "line $line: union return type";
        }
    }
    return $findings;
}

$report = [];
foreach (array_slice($argv, 1) as $file) {
    $report[$file] = php8_findings((string) file_get_contents($file));
}
echo json_encode($report, JSON_UNESCAPED_SLASHES), "\n";
