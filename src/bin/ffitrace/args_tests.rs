use super::*;

const PAGE: u64 = 4096;

fn parse(args: &[&str]) -> Result<Plan, ArgError> {
    let args: Vec<String> = args.iter().map(|arg| arg.to_string()).collect();
    plan(&args, PAGE, |path| if path == "present" { Ok(vec![1, 2, 3]) } else { Err("no such file".into()) })
}

fn reason(args: &[&str]) -> String {
    match parse(args) {
        Ok(plan) => panic!("{args:?} was accepted: {plan:?}"),
        Err(error) => error.to_string(),
    }
}

fn at(index: usize, offset: i64) -> Value {
    Value::Pointer(BufRef { index, offset })
}

#[test]
fn integers() {
    let plan = parse(&["42", "-7", "0x2a", "-0x10", "18446744073709551615", "-9223372036854775808"]).unwrap();
    let expected = [42, (-7i64) as u64, 42, (-16i64) as u64, u64::MAX, 1 << 63];
    assert_eq!(plan.values, expected.map(Value::Integer));
    assert!(plan.buffers.is_empty());
}

#[test]
fn buffers_and_references() {
    let plan = parse(&["buf:16={&1+4}00ff", "str:hi", "&0+8", "&1", "buf:3@4094=@present"]).unwrap();
    assert_eq!(plan.values, [at(0, 0), at(1, 0), at(0, 8), at(1, 0), at(2, 0)]);
    let fill = vec![Piece::Address(BufRef { index: 1, offset: 4 }), Piece::Bytes(vec![0, 0xff])];
    assert_eq!(plan.buffers[0], BufferSpec { size: 16, start: 0, fill });
    assert_eq!(plan.buffers[1], BufferSpec { size: 3, start: 0, fill: vec![Piece::Bytes(b"hi\0".to_vec())] });
    assert_eq!(plan.buffers[2], BufferSpec { size: 3, start: 4094, fill: vec![Piece::Bytes(vec![1, 2, 3])] });
    assert_eq!(plan.buffers[2].pages(PAGE), 2);
}

#[test]
fn zero_length_buffer_gets_one_page() {
    let plan = parse(&["buf:0", "&0+4096"]).unwrap();
    assert_eq!(plan.buffers[0].pages(PAGE), 1);
}

#[test]
fn pointer_before_buffer_start() {
    let plan = parse(&["buf:8@100", "&0-100", "&0+3996"]).unwrap();
    assert_eq!(plan.values[1..], [at(0, -100), at(0, 3996)]);
}

#[test]
fn bad_arguments_name_the_argument_and_the_reason() {
    let table: &[(&[&str], &str)] = &[
        (&["buf:abc"], "invalid argument 'buf:abc': buffer size 'abc' is not a number"),
        (&["buf:4=abc"], "invalid argument 'buf:4=abc': HEX has an odd number of digits (3)"),
        (&["buf:4=zz"], "invalid argument 'buf:4=zz': 'z' is not a hex digit"),
        (&["buf:2=000000"], "invalid argument 'buf:2=000000': the initial contents are 3 bytes long, more than the buffer's 2"),
        (&["buf:8={&1}"], "invalid argument 'buf:8={&1}': there is no buffer 1 (buffers: 1)"),
        (&["buf:8={1}"], "invalid argument 'buf:8={1}': '{1}' is not of the form {&K}"),
        (&["buf:8={&0"], "invalid argument 'buf:8={&0': '{' without a matching '}' in HEX"),
        (&["buf:4@4096"], "invalid argument 'buf:4@4096': page offset 4096 is not smaller than the page size 4096"),
        (&["buf:4@x"], "invalid argument 'buf:4@x': page offset 'x' is not a number"),
        (&["buf:4=@missing"], "invalid argument 'buf:4=@missing': cannot read 'missing': no such file"),
        (&["buf:2000000000"], "invalid argument 'buf:2000000000': buffer size 2000000000 is larger than the limit of 1073741824 bytes (1 GiB)"),
        (&["&0"], "invalid argument '&0': there is no buffer 0 (buffers: 0)"),
        (&["buf:4", "&x"], "invalid argument '&x': buffer number 'x' is not a number"),
        (&["buf:4", "&0+y"], "invalid argument '&0+y': offset 'y' is not a number"),
        (&["buf:4", "&0+4097"], "invalid argument '&0+4097': offset 4097 lies outside buffer 0's pages (allowed: 0 to 4096)"),
        (&["buf:4", "&0-1"], "invalid argument '&0-1': offset -1 lies outside buffer 0's pages (allowed: 0 to 4096)"),
        (&["seven"], "invalid argument 'seven': not an integer, buf:N, str:TEXT or &K"),
        (&["0x"], "invalid argument '0x': not an integer, buf:N, str:TEXT or &K"),
        (&["18446744073709551616"], "invalid argument '18446744073709551616': 18446744073709551616 does not fit in 64 bits"),
        (&["-9223372036854775809"], "invalid argument '-9223372036854775809': -9223372036854775809 does not fit in 64 bits"),
        (&["1", "2", "3", "4", "5", "6", "7"], "too many arguments: 7 given, a function takes at most 6"),
    ];
    for (args, expected) in table {
        assert_eq!(reason(args), *expected, "for {args:?}");
    }
}
