;; The body of a JSON string for bytes of UTF-8 text, 16 bytes at a time (WebAssembly SIMD).
;;
;; JSON escapes only ASCII: the quote, the backslash and the control characters below 0x20. Every other byte,
;; including each byte of a multi-byte character, is copied as is, so the text is never decoded. The result is
;; what JSON.stringify writes for the decoded text, without the quotes: \b \t \n \f \r for those five controls,
;; \u00xx (lower-case hex) for the other controls, \" and \\.
;;
;; The source of src/service/json-escape-wasm.ts: `node scripts/gen-wasm.mjs` compiles it (wabt), and
;; test/unit/json-escape.test.ts fails when the two differ.
(module
  ;; Bytes 0-31: the letter of each control character's short escape, or 0 when it has none.
  ;; Bytes 32-47: the hex digits. The caller's input starts at 64 and its output after that (the layout is in
  ;; src/service/json-escape.ts). Eight pages, fixed: the caller keeps one view of it.
  (memory (export "memory") 8 8)
  (data (i32.const 0) "\00\00\00\00\00\00\00\00btn\00fr\00\00\00\00\00\00\00\00\00\00\00\00\00\00\00\00\00\00")
  (data (i32.const 32) "0123456789abcdef")

  ;; Writes the escape of byte $c (a quote, a backslash or a control character) at $o; returns the end.
  (func $escapeOne (param $c i32) (param $o i32) (result i32)
    (local $letter i32)
    (i32.store8 (local.get $o) (i32.const 0x5c))
    (if (i32.ge_u (local.get $c) (i32.const 0x20))
      (then
        (i32.store8 offset=1 (local.get $o) (local.get $c))
        (return (i32.add (local.get $o) (i32.const 2)))))
    (local.set $letter (i32.load8_u (local.get $c)))
    (if (local.get $letter)
      (then
        (i32.store8 offset=1 (local.get $o) (local.get $letter))
        (return (i32.add (local.get $o) (i32.const 2)))))
    ;; "u00", then the two hex digits (the first is 0 or 1)
    (i32.store8 offset=1 (local.get $o) (i32.const 0x75))
    (i32.store16 offset=2 (local.get $o) (i32.const 0x3030))
    (i32.store8 offset=4 (local.get $o) (i32.load8_u offset=32 (i32.shr_u (local.get $c) (i32.const 4))))
    (i32.store8 offset=5 (local.get $o) (i32.load8_u offset=32 (i32.and (local.get $c) (i32.const 15))))
    (i32.add (local.get $o) (i32.const 6)))

  ;; Escapes the $len bytes at $i to $o; returns where the output ends. The output may be written up to 15
  ;; bytes past that end (whole vectors are stored before they are checked), never more than 6 * $len + 16
  ;; bytes from $o in all.
  (func (export "escape") (param $i i32) (param $len i32) (param $o i32) (result i32)
    (local $end i32) (local $last16 i32) (local $mask i32) (local $c i32) (local $v v128)
    (local.set $end (i32.add (local.get $i) (local.get $len)))
    (local.set $last16 (i32.sub (local.get $end) (i32.const 16)))
    (block $vectorsDone
      (loop $vectors
        (br_if $vectorsDone (i32.gt_s (local.get $i) (local.get $last16)))
        (local.set $v (v128.load align=1 (local.get $i)))
        (v128.store align=1 (local.get $o) (local.get $v))
        ;; one bit per byte that needs an escape: below 0x20, a quote or a backslash
        (local.set $mask (i8x16.bitmask (v128.or
          (i8x16.lt_u (local.get $v) (i8x16.splat (i32.const 0x20)))
          (v128.or
            (i8x16.eq (local.get $v) (i8x16.splat (i32.const 0x22)))
            (i8x16.eq (local.get $v) (i8x16.splat (i32.const 0x5c)))))))
        (if (i32.eqz (local.get $mask))
          (then
            (local.set $i (i32.add (local.get $i) (i32.const 16)))
            (local.set $o (i32.add (local.get $o) (i32.const 16)))
            (br $vectors)))
        ;; the bytes before the first one that needs an escape are already in place; escape it and go on
        ;; with the vector that starts right after it
        (local.set $mask (i32.ctz (local.get $mask)))
        (local.set $i (i32.add (local.get $i) (local.get $mask)))
        (local.set $o (call $escapeOne (i32.load8_u (local.get $i)) (i32.add (local.get $o) (local.get $mask))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $vectors)))
    ;; the last bytes, fewer than 16, one at a time
    (block $done
      (loop $bytes
        (br_if $done (i32.ge_u (local.get $i) (local.get $end)))
        (local.set $c (i32.load8_u (local.get $i)))
        (if (i32.or
              (i32.lt_u (local.get $c) (i32.const 0x20))
              (i32.or (i32.eq (local.get $c) (i32.const 0x22)) (i32.eq (local.get $c) (i32.const 0x5c))))
          (then (local.set $o (call $escapeOne (local.get $c) (local.get $o))))
          (else
            (i32.store8 (local.get $o) (local.get $c))
            (local.set $o (i32.add (local.get $o) (i32.const 1)))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $bytes)))
    (local.get $o)))
