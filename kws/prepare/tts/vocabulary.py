"""Built-in English word lists of the TTS source's open-set data (`--classes sub`), as tuples: no data files.

- GENERAL_WORDS: everyday words the `unknown` class is drawn from (with `--unknown-words`).
- CANDIDATE_WORDS: a vocabulary of common English words searched for confusables, the words that share
  sounds with a keyword ("go" -> "goal", "gold"), chosen by kws.prepare.tts.phonemes, never by hand.

Both lists may hold a keyword or a word that sounds like one: they are filtered against the keyword list at
run time, so the same lists serve any keywords.
"""

from __future__ import annotations

GENERAL_WORDS = tuple(
    """
    able accept act afraid age air alive almost already amount animal apple arm around art asleep baby
    bag bank beach beautiful become begin believe below better big blanket boat book both bottom boy
    branch bread breakfast bright brother build butter buy call can car care catch chance cheap chicken
    chocolate church class clear close coat cold come cook copy cost country cover cry dance daughter
    dear deep different dirty door dream drink dry early easy edge empty enough every fall famous farm
    father few fight find fire fish floor fly foot forget fresh front full game gentle girl glass grass
    green group guess half hang hat head hear help high hold holiday hope hot human husband important
    island join jump keep kind kitchen lady lamp large late lazy learn library light line listen live
    look love lucky machine man map matter meal meet middle minute money moon mother mouth much name
    nature neck never news nice noise nose number office oil open other page paper park party pay pencil
    pepper picture pig plan plate please point poor pretty problem push question quiet read real red
    rest rich river rock round run safe same save school season secret sell shape sharp ship shoe show
    side simple sister skin sleep small smile soft some soon sound south speak square star station step
    stone street student sugar sun swim tail talk taste team thank think through time today tomorrow
    tooth touch toy travel try under use valley village voice walk want wash water weather welcome wet
    wheel where why wife wind winter woman word world yellow
    """.split()
)

CANDIDATE_WORDS = tuple(
    """
    a about above accept account across act action add address afraid after afternoon again against age
    ago agree ahead air alarm album alive all allow almost alone along already also always among amount and
    angle angry animal answer any anyone apart apple area arm army around arrive art as ask asleep at
    attack aunt autumn away awake baby back backward bad bag bake ball band bank bar base basket bat bath
    bay beach bean bear beard beat beautiful because become bed bedroom bee beef been beer before beg begin
    behind believe bell belt below bench bend berry best bet better between big bike bill bin bird birth
    bit bite black blade blame blanket blind block blood blow blue board boat body boil bold bone book boot
    border born boss both bottle bottom bowl box boy brain branch brave bread break breakfast breath bridge
    bright bring broad brother brown brush build bullet burn bus bush busy but butter button buy by cabin
    cable cake call calm camera camp can candle cap captain car card care carpet carry case cash cast castle
    cat catch cattle cause cell center chain chair chalk chance change chart chase cheap check cheek cheese
    chest chicken chief child chin chip chocolate choose church circle city class clay clean clear clever
    climb clock close cloth cloud club coal coast coat code coffee coin cold collar color column comb come
    common cook cool copy core corn corner cost cotton cough count country course court cousin cover cow
    crack crash cream crew crop cross crowd crown cry cup cure curl curve cut dad damp dance danger dark
    date daughter day dead deal dear debt decide deck deep deer degree deny desk detail dial diet dig dinner
    dip direct dirt dirty dish dive do dock doctor does dog doll dollar done door dot double dough dove down
    downtown dozen draft drag draw dream dress drift drink drive drop drum dry duck dug dust duty each eagle
    ear early earn earth east easy eat echo edge egg eight eighteen eighty either elbow eleven else empty
    end enemy engine enough enter equal escape even evening event ever every exact exit eye face fact fail
    fair faith fall false fame family famous fan far farm fast fat father fault fear feast feather feed
    feel fell felt fence few field fifteen fifty fight figure file fill film final find fine finger finish
    fire firm first fish fist fit five fix flag flame flat flight float flock floor flour flow flower fly
    fog fold folk follow food fool foot for force forest forget fork form fort forth fortune forty forward
    found four fourteen fourth fox frame free fresh friday friend frog from front frost fruit fuel full fun
    funny fur future gain game gap garden gas gate gather gave gaze gear gentle get ghost gift girl give
    glad glass glove glow glue go goal goat goes going gold golden golf gone good goose got gown grab grade
    grain grand grape grass grave gray great green greet grew grey grid grip ground group grow guard guess
    guest guide gun guy habit hair half hall hammer hand handle hang happen happy harbor hard harm hat hate
    have hay he head heal health heap hear heart heat heaven heavy hedge heel height hello help hen her herb
    here hero hey hide high hill him hint hip his history hit hobby hold hole holiday hollow home honey hood
    hook hope horn horse host hot hotel hour house how huge human hunt hurry hurt husband ice idea if ill
    inch inside into iron island it item jacket jam jar jaw jelly jet job join joke joy judge juice jump
    jungle just keen keep kettle key kick kid kill kind king kiss kit kitchen kite knee knife knit knock
    knot know label lace lady lake lamb lamp land lane large last late laugh law lawn lay lazy lead leaf
    lean learn least leather leave led ledge leg lemon lend less lesson let letter level lid lie life lift
    light like lime limit line lion lip list listen little live load loaf loan local lock log lone long
    look loose lord lose loss lost lot loud love low luck lucky lunch machine mad made mail main make male
    man many map marble march margin mark market marry martin mask mass master mat match may maybe meal mean
    meat medal meet melt member men mend mess metal middle might mild mile milk mill mind mine minute mirror
    miss mist mix model moment monday money monkey month mood moon more morning most mother motor mountain
    mouse mouth move movie much mud mug music must nail name narrow nation nature navy near neat neck need
    needle nerve nest net never new news next nice night nine nineteen ninety no noble nod noise none noon
    north nose not note nothing notice now number nurse nut oak ocean odd of off offer office officer often
    oil okay old on once one only onto open opera orange order other ought our out outside oven over owl
    own pace pack page pain paint pair palace pale palm pan paper parent park part party pass past path pay
    peace peach pear pen pencil people pepper person pet phone piano pick picture pie piece pig pile pill
    pin pine pink pipe pitch place plain plan plane plant plate play please plenty plot plug pocket poem
    point pole police polish pond pool poor pop port post pot potato pound powder power press pretty price
    pride print prize problem proof proud pull pump pupil puppy purple push put queen question quick quiet
    quit quite race rack radio rag rail rain raise ran range rank rare rat rate raw reach read ready real
    reason record red rent rest rice rich ride rider ridge right ring ripe rise risk river road roast rob
    rock rod roll roof room root rope rose rough round route row royal rub rug rule run rush sad safe sail
    salad salt same sand save saw say scale school score sea seal search season seat second secret see seed
    seek seem sell send sense set setting seven seventeen seventy several sew shade shadow shake shape share
    sharp she sheep sheet shelf shell shield shine ship shirt shock shoe shop shore short shot should
    shout show shut sick side sign silk silver simple sing sink sister sit six sixteen sixth sixty size
    skill skin skip skirt sky sleep slide slip slow small smell smile smoke snake snow so soap sock soft
    soil soldier some son song soon sore sort soul sound soup south space spare speak speed spell spend
    spin spoon sport spot spring square stage stair stamp stand star start state station stay steam steel
    step stick still stock stocking stone stool stopped store storm story stove straw street string strong
    student study such sugar suit summer sun sunday supper sure swamp sweet swim swing table tail take tale
    talk tall tank tap tape taste tax tea teach teacher team tear tell ten tent term test than thank that
    the then there these they thick thin thing think third thirsty thirty this thread threat throat through
    throw thumb ticket tide tie tiger till time tin tiny tip tired title to toast today toe together told
    tomato tomorrow ton tone tongue tonight too took tool tooth top torch toss total touch tour towel tower
    town toy track trade trail train trap tray treat treaty tribe trick trip truck true trunk trust truth
    try tube tune tunnel turn twelve twenty twice twin type uncle under until up upon upper upset upstairs
    us use useful valley value van vase very vest view village visit visual voice vote wage wait wake walk
    wall want war warm was wash watch water wave wax way we weak wear weather week weight welcome well went
    west wet what wheat wheel when where which while whip whisper white who whole why wide wife wild will
    win wind window wine wing winter wire wise wish with woke wolf woman won wonder wood wool word work
    world worm worry would wrap write wrong yard yeah year yell yellow yes yesterday yet you young zebra
    zero zone
    """.split()
)
